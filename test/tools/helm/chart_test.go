// Package helm tests charts/vpcchain: rendered with Helm's own SDK (the
// code `helm template` and `helm install` run) and compared object by
// object with our kustomize manifest as kustomize's API builds it (what
// `kubectl kustomize conflist/manifests` prints). Its own module, so Helm's
// dependencies stay out of the product's go.mod; the Makefile builds the
// helm binary the cluster tier runs (TestClusterHelm) from it too.
package helm

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
)

const (
	chartDir    = "../../../charts/vpcchain"
	manifestDir = "../../../conflist/manifests"
	// The cluster tier's Kubernetes (Makefile KUBE_VERSION).
	kubeVersion = "v1.33.13"
)

// helmLabels are the only differences allowed between the chart's objects
// and the manifest's: Helm's own labels on each object's metadata (not on
// the pod template, whose labels are compared).
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance"}

type object = map[string]any

// render renders the chart as `helm template --kube-version <ours>
// --namespace ns` does, with vals over the chart's values.
func render(t *testing.T, ns string, vals map[string]any) (map[string]object, error) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	install := action.NewInstall(&action.Configuration{})
	install.DryRunStrategy = action.DryRunClient
	install.Replace = true
	install.ReleaseName = "vpcchain"
	install.Namespace = ns
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	install.KubeVersion = kv
	r, err := install.Run(ch, vals)
	if err != nil {
		return nil, err
	}
	rel, ok := r.(*release.Release)
	if !ok {
		t.Fatalf("release of type %T", r)
	}
	if len(rel.Hooks) > 0 {
		t.Errorf("the chart has %d hooks; it should have none (kubectl has no such thing)", len(rel.Hooks))
	}
	return parse(t, rel.Manifest), nil
}

func mustRender(t *testing.T, ns string, vals map[string]any) map[string]object {
	t.Helper()
	objs, err := render(t, ns, vals)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// kustomize builds conflist/manifests as `kubectl kustomize` does.
func kustomize(t *testing.T) map[string]object {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), manifestDir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return parse(t, string(out))
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// parse decodes a YAML stream into objects by apiVersion/kind/namespace/name,
// through JSON so both sides have the same Go types (numbers float64).
func parse(t *testing.T, stream string) map[string]object {
	t.Helper()
	objs := map[string]object{}
	for _, doc := range docSep.Split(stream, -1) {
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		var o object
		if err := json.Unmarshal(js, &o); err != nil {
			t.Fatal(err)
		}
		if o == nil {
			continue // comments only
		}
		k := key(o)
		if _, dup := objs[k]; dup {
			t.Fatalf("%s twice", k)
		}
		objs[k] = o
	}
	return objs
}

func key(o object) string {
	md, _ := o["metadata"].(map[string]any)
	return fmt.Sprintf("%v %v %v/%v", o["apiVersion"], o["kind"], md["namespace"], md["name"])
}

// TestChartMatchesManifest: with default values the chart renders exactly
// the manifest's objects, field for field, but for Helm's labels.
func TestChartMatchesManifest(t *testing.T) {
	want := kustomize(t)
	got := mustRender(t, "kube-system", nil)
	for k, o := range got {
		md := o["metadata"].(map[string]any)
		labels, _ := md["labels"].(map[string]any)
		for _, l := range helmLabels {
			if labels[l] == nil {
				t.Errorf("%s: no label %s", k, l)
			}
			delete(labels, l)
		}
	}
	if len(want) < 10 {
		t.Fatalf("kustomize built only %d objects", len(want))
	}
	for _, k := range sortedKeys(want) {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: in the manifest, not in the chart", k)
			continue
		}
		for _, d := range diff("", want[k], g) {
			t.Errorf("%s: %s", k, d)
		}
	}
	for _, k := range sortedKeys(got) {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: in the chart, not in the manifest", k)
		}
	}
	t.Logf("%d objects, the same but for Helm's labels %v", len(want), helmLabels)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// diff lists the paths where a (the manifest's) and b (the chart's) differ.
func diff(path string, a, b any) []string {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		var out []string
		keys := sortedKeys(av)
		for k := range bv {
			if _, ok := av[k]; !ok {
				keys = append(keys, k)
			}
		}
		for _, k := range keys {
			out = append(out, diff(path+"."+k, av[k], bv[k])...)
		}
		return out
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			break
		}
		var out []string
		for i := range av {
			out = append(out, diff(fmt.Sprintf("%s[%d]", path, i), av[i], bv[i])...)
		}
		return out
	}
	if reflect.DeepEqual(a, b) {
		return nil
	}
	aj, _ := json.Marshal(a)
	bj, _ := json.Marshal(b)
	return []string{fmt.Sprintf("%s: manifest %s, chart %s", path, aj, bj)}
}

// decode converts one rendered object to its API type.
func decode[T any](t *testing.T, objs map[string]object, k string) *T {
	t.Helper()
	o, ok := objs[k]
	if !ok {
		t.Fatalf("no %s in %v", k, sortedKeys(objs))
	}
	js, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	v := new(T)
	if err := json.Unmarshal(js, v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestChartValues: each value lands where it should, and only there.
func TestChartValues(t *testing.T) {
	vals := map[string]any{}
	if err := yaml.Unmarshal([]byte(`
fullnameOverride: cni
image: {repository: registry.example/vpcchain, tag: v9, pullPolicy: Always}
env:
  WARM_ENI_TARGET: 3          # numbers and booleans become strings
  ENABLE_IPv6: true
  MAX_PODS: null              # null drops the key: unset, like ""
  AWS_ENDPOINT_URL_EC2: http://ec2.example
extraEnv:
  - name: HTTPS_PROXY
    valueFrom: {secretKeyRef: {name: proxy, key: url}}
nodeSelector: {node.example/cni: vpcchain}
tolerations: [{key: only, operator: Exists, effect: NoSchedule}]
affinity: null
priorityClassName: ""
updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
podAnnotations: {example/a: "1"}
podLabels: {team: net}
podSecurityContext: {seccompProfile: {type: RuntimeDefault}}
imagePullSecrets: [{name: pull}]
resources: {requests: {cpu: 50m}, limits: {memory: 256Mi}}
securityContext: {capabilities: {add: [NET_ADMIN]}, privileged: null, allowPrivilegeEscalation: null}
init: {resources: {requests: {cpu: 20m, memory: null}}, securityContext: {privileged: true, runAsUser: 0}}
installer: {resources: {requests: null, limits: {memory: 32Mi}}}
livenessProbeTimeoutSeconds: 7
readinessProbeTimeoutSeconds: 8
criSocketDir: /run/crio
serviceAccount: {name: agent, annotations: {eks.amazonaws.com/role-arn: "arn:aws:iam::111122223333:role/vpcchain"}}
eniConfig:
  create: true
  subnets:
    us-west-2a: {id: subnet-a, securityGroups: [sg-1, sg-2]}
    us-west-2b: {id: subnet-b}
`), &vals); err != nil {
		t.Fatal(err)
	}
	const ns = "net"
	objs := mustRender(t, ns, vals)

	ds := decode[appsv1.DaemonSet](t, objs, "apps/v1 DaemonSet net/cni")
	pod := ds.Spec.Template.Spec
	all := append(slices.Clone(pod.InitContainers), pod.Containers...)
	if len(all) != 4 {
		t.Fatalf("%d containers", len(all))
	}
	for _, c := range all {
		if c.Image != "registry.example/vpcchain:v9" || c.ImagePullPolicy != corev1.PullAlways {
			t.Errorf("container %s: image %s %s", c.Name, c.Image, c.ImagePullPolicy)
		}
		if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef.Name != "cni-config" {
			t.Errorf("container %s: envFrom %+v", c.Name, c.EnvFrom)
		}
		if i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "HTTPS_PROXY" }); i < 0 ||
			c.Env[i].ValueFrom.SecretKeyRef.Name != "proxy" {
			t.Errorf("container %s: extraEnv missing: %+v", c.Name, c.Env)
		}
	}
	byName := map[string]corev1.Container{}
	for _, c := range all {
		byName[c.Name] = c
	}
	d, inst := byName["vpcchaind"], byName["install-cni-config"]
	check := func(what string, got, want any) {
		t.Helper()
		// Both through JSON: a typed field and the values' map compare
		// equal when they serialize to the same object.
		var g, w any
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		_ = json.Unmarshal(gj, &g)
		_ = json.Unmarshal(wj, &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: %s, want %s", what, gj, wj)
		}
	}
	// Helm merges a map given over a default map (as aws-vpc-cni's chart
	// does): the default's other keys stay unless set to null.
	check("daemon's resources", d.Resources, map[string]any{"requests": map[string]any{"cpu": "50m", "memory": "64Mi"}, "limits": map[string]any{"memory": "256Mi"}})
	check("daemon's securityContext", d.SecurityContext, map[string]any{"capabilities": map[string]any{"add": []string{"NET_ADMIN"}}})
	check("daemon's probe timeouts", []int32{d.LivenessProbe.TimeoutSeconds, d.ReadinessProbe.TimeoutSeconds}, []int32{7, 8})
	check("node-setup's securityContext", byName["node-setup"].SecurityContext, map[string]any{"privileged": true, "runAsUser": 0})
	check("install-cni-binaries' securityContext", byName["install-cni-binaries"].SecurityContext, map[string]any{"allowPrivilegeEscalation": false})
	for _, n := range []string{"node-setup", "install-cni-binaries"} {
		check(n+"'s resources", byName[n].Resources, map[string]any{"requests": map[string]any{"cpu": "20m"}})
	}
	check("installer's resources", inst.Resources, map[string]any{"limits": map[string]any{"memory": "32Mi"}})
	check("installer's preStop", inst.Lifecycle.PreStop.Exec.Command[3], "--uninstall-if-deleted=cni")
	if i := slices.IndexFunc(inst.Env, func(e corev1.EnvVar) bool { return e.Name == "POLICY_HOOK_SERVICE_ACCOUNT" }); i < 0 || inst.Env[i].Value != "cni-policy-hook" {
		t.Errorf("installer's env %+v: want POLICY_HOOK_SERVICE_ACCOUNT=cni-policy-hook", inst.Env)
	}
	criMount := d.VolumeMounts[slices.IndexFunc(d.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "cri-socket-dir" })]
	criVol := pod.Volumes[slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == "cri-socket-dir" })]
	check("CRI socket dir", []string{criMount.MountPath, criVol.HostPath.Path}, []string{"/run/crio", "/run/crio"})

	check("nodeSelector", pod.NodeSelector, vals["nodeSelector"])
	check("tolerations", pod.Tolerations, vals["tolerations"])
	check("affinity", pod.Affinity, nil)
	check("priorityClassName", pod.PriorityClassName, "")
	check("pod securityContext", pod.SecurityContext, vals["podSecurityContext"])
	check("imagePullSecrets", pod.ImagePullSecrets, vals["imagePullSecrets"])
	check("serviceAccountName", pod.ServiceAccountName, "agent")
	check("updateStrategy", ds.Spec.UpdateStrategy, vals["updateStrategy"])
	check("pod annotations", ds.Spec.Template.Annotations, vals["podAnnotations"])
	check("pod labels", ds.Spec.Template.Labels, map[string]string{"app.kubernetes.io/name": "vpcchain", "team": "net"})
	check("selector (podLabels stay out: it cannot change)", ds.Spec.Selector.MatchLabels, map[string]string{"app.kubernetes.io/name": "vpcchain"})

	cm := decode[corev1.ConfigMap](t, objs, "v1 ConfigMap net/cni-config")
	if v, ok := cm.Data["MAX_PODS"]; ok {
		t.Errorf("ConfigMap MAX_PODS=%q, want it dropped (null)", v)
	}
	for k, want := range map[string]string{"WARM_ENI_TARGET": "3", "ENABLE_IPv6": "true", "AWS_ENDPOINT_URL_EC2": "http://ec2.example", "WARM_PREFIX_TARGET": "1"} {
		if got, ok := cm.Data[k]; !ok || got != want {
			t.Errorf("ConfigMap %s=%q (present %v), want %q", k, got, ok, want)
		}
	}

	sa := decode[corev1.ServiceAccount](t, objs, "v1 ServiceAccount net/agent")
	check("ServiceAccount annotations", sa.Annotations, map[string]string{"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/vpcchain"})
	for _, k := range []string{"rbac.authorization.k8s.io/v1 ClusterRoleBinding <nil>/cni", "rbac.authorization.k8s.io/v1 RoleBinding net/cni"} {
		b := decode[rbacv1.ClusterRoleBinding](t, objs, k)
		check(k+" subjects", b.Subjects, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "agent", Namespace: ns}})
	}
	hb := decode[rbacv1.ClusterRoleBinding](t, objs, "rbac.authorization.k8s.io/v1 ClusterRoleBinding <nil>/cni-policy-hook")
	check("policy hook's binding", hb.Subjects, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "cni-policy-hook", Namespace: ns}})
	role := decode[rbacv1.Role](t, objs, "rbac.authorization.k8s.io/v1 Role net/cni")
	check("Role's resourceNames", [][]string{role.Rules[0].ResourceNames, role.Rules[1].ResourceNames}, [][]string{{"cni"}, {"cni-policy-hook"}})
	vap := objs["admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy <nil>/cni-policy-hook"]
	if !strings.Contains(fmt.Sprint(vap), `"system:serviceaccount:net:cni-policy-hook"`) {
		t.Errorf("admission policy does not match the hook's user in namespace net: %v", vap)
	}
	check("admission binding's policy", objs["admissionregistration.k8s.io/v1 ValidatingAdmissionPolicyBinding <nil>/cni-policy-hook"]["spec"],
		map[string]any{"policyName": "cni-policy-hook", "validationActions": []string{"Deny"}})

	check("ENIConfig us-west-2a", objs["crd.k8s.amazonaws.com/v1alpha1 ENIConfig <nil>/us-west-2a"]["spec"],
		map[string]any{"subnet": "subnet-a", "securityGroups": []string{"sg-1", "sg-2"}})
	check("ENIConfig us-west-2b", objs["crd.k8s.amazonaws.com/v1alpha1 ENIConfig <nil>/us-west-2b"]["spec"], map[string]any{"subnet": "subnet-b"})
	if len(objs) != 14 {
		t.Errorf("%d objects, want the manifest's 12 and 2 ENIConfigs: %v", len(objs), sortedKeys(objs))
	}

	// image.override wins over repository:tag; serviceAccount.create false
	// binds the named account without creating it.
	objs = mustRender(t, ns, map[string]any{"image": map[string]any{"override": "mirror.example/cni@sha256:0123"},
		"serviceAccount": map[string]any{"create": false, "name": "existing"}})
	ds = decode[appsv1.DaemonSet](t, objs, "apps/v1 DaemonSet net/vpcchain")
	check("image.override", ds.Spec.Template.Spec.Containers[0].Image, "mirror.example/cni@sha256:0123")
	check("serviceAccountName", ds.Spec.Template.Spec.ServiceAccountName, "existing")
	if _, ok := objs["v1 ServiceAccount net/existing"]; ok {
		t.Error("serviceAccount.create false still creates the ServiceAccount")
	}
	b := decode[rbacv1.ClusterRoleBinding](t, objs, "rbac.authorization.k8s.io/v1 ClusterRoleBinding <nil>/vpcchain")
	check("binding of an existing ServiceAccount", b.Subjects[0].Name, "existing")

	// ENIConfigs need their subnets.
	for _, bad := range []string{`{create: true}`, `{create: true, subnets: {us-west-2a: {securityGroups: [sg-1]}}}`} {
		v := map[string]any{}
		if err := yaml.Unmarshal([]byte(`eniConfig: `+bad), &v); err != nil {
			t.Fatal(err)
		}
		if _, err := render(t, ns, v); err == nil || !strings.Contains(err.Error(), "must be set") {
			t.Errorf("eniConfig %s: %v, want a missing-subnet error", bad, err)
		}
	}
}
