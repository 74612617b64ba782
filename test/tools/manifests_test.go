package tools

// Strict validation of the install manifests in conflist/manifests: every
// document must decode into its Kubernetes API type with no unknown field (a
// typo such as "hostNetwrok" fails), and the DaemonSet must keep the
// properties the product relies on.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

const manifestDir = "../../conflist/manifests"

// newObject returns the API type for apiVersion/kind.
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "rbac.authorization.k8s.io/v1/ClusterRole":
		return &rbacv1.ClusterRole{}, true
	case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}, true
	case "rbac.authorization.k8s.io/v1/Role":
		return &rbacv1.Role{}, true
	case "rbac.authorization.k8s.io/v1/RoleBinding":
		return &rbacv1.RoleBinding{}, true
	case "apps/v1/DaemonSet":
		return &appsv1.DaemonSet{}, true
	case "apiextensions.k8s.io/v1/CustomResourceDefinition":
		return &map[string]any{}, true
	case "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy":
		return &admissionv1.ValidatingAdmissionPolicy{}, true
	case "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding":
		return &admissionv1.ValidatingAdmissionPolicyBinding{}, true
	}
	return nil, false
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitDocs splits a multi-document YAML stream; documents holding only
// comments and blank lines are dropped.
func splitDocs(data []byte) [][]byte {
	var out [][]byte
	for _, d := range docSep.Split(string(data), -1) {
		empty := true
		for _, l := range strings.Split(d, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				empty = false
				break
			}
		}
		if !empty {
			out = append(out, []byte(d))
		}
	}
	return out
}

// decodeStrict decodes one YAML document into obj, refusing duplicate keys
// and fields obj does not have.
func decodeStrict(doc []byte, obj any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the object")
	}
	return nil
}

type manifestSet struct {
	serviceAccounts map[string]*corev1.ServiceAccount
	configMaps      map[string]*corev1.ConfigMap
	clusterRoles    map[string]*rbacv1.ClusterRole
	bindings        []*rbacv1.ClusterRoleBinding
	roles           map[string]*rbacv1.Role // by namespace/name
	roleBindings    []*rbacv1.RoleBinding
	// The manifest's admission policy and its binding.
	admissionPolicy  *admissionv1.ValidatingAdmissionPolicy
	admissionBinding *admissionv1.ValidatingAdmissionPolicyBinding
	daemonSets       []*appsv1.DaemonSet
	crds             []map[string]any
}

func loadManifests(t *testing.T) manifestSet {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", manifestDir, err)
	}
	s := manifestSet{
		serviceAccounts: map[string]*corev1.ServiceAccount{},
		configMaps:      map[string]*corev1.ConfigMap{},
		clusterRoles:    map[string]*rbacv1.ClusterRole{},
		roles:           map[string]*rbacv1.Role{},
	}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue // kustomize's, not an object (TestChartMatchesManifest reads it)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocs(data) {
			where := fmt.Sprintf("%s document %d", filepath.Base(f), i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			obj, ok := newObject(tm.APIVersion, tm.Kind)
			if !ok {
				t.Fatalf("%s: unexpected apiVersion %q kind %q", where, tm.APIVersion, tm.Kind)
			}
			if err := decodeStrict(doc, obj); err != nil {
				t.Fatalf("%s (%s): strict decode: %v", where, tm.Kind, err)
			}
			switch o := obj.(type) {
			case *corev1.ServiceAccount:
				checkNamespace(t, where, o.ObjectMeta)
				s.serviceAccounts[o.Name] = o
			case *corev1.ConfigMap:
				checkNamespace(t, where, o.ObjectMeta)
				s.configMaps[o.Name] = o
			case *rbacv1.ClusterRole:
				s.clusterRoles[o.Name] = o
			case *rbacv1.ClusterRoleBinding:
				s.bindings = append(s.bindings, o)
			case *rbacv1.Role:
				checkNamespace(t, where, o.ObjectMeta)
				s.roles[o.Namespace+"/"+o.Name] = o
			case *rbacv1.RoleBinding:
				checkNamespace(t, where, o.ObjectMeta)
				s.roleBindings = append(s.roleBindings, o)
			case *appsv1.DaemonSet:
				checkNamespace(t, where, o.ObjectMeta)
				s.daemonSets = append(s.daemonSets, o)
			case *map[string]any:
				s.crds = append(s.crds, *o)
			case *admissionv1.ValidatingAdmissionPolicy:
				s.admissionPolicy = o
			case *admissionv1.ValidatingAdmissionPolicyBinding:
				s.admissionBinding = o
			}
		}
	}
	return s
}

func checkNamespace(t *testing.T, where string, m metav1.ObjectMeta) {
	t.Helper()
	if m.Name == "" || m.Namespace != "kube-system" {
		t.Errorf("%s: name %q namespace %q, want a name in kube-system", where, m.Name, m.Namespace)
	}
}

func TestSplitDocs(t *testing.T) {
	docs := splitDocs([]byte("# head\n---\na: 1\n---   \n# only a comment\n---\nb: 2\n"))
	if len(docs) != 2 {
		t.Fatalf("got %d documents, want 2: %q", len(docs), docs)
	}
}

func TestStrictDecodeCatchesTypos(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      hostNetwrok: true\n",
		"apiVersion: v1\nkind: ConfigMap\ndata:\n  A: \"1\"\n  A: \"2\"\n",
	} {
		var ds appsv1.DaemonSet
		var cm corev1.ConfigMap
		obj := any(&ds)
		if strings.Contains(doc, "ConfigMap") {
			obj = &cm
		}
		if err := decodeStrict([]byte(doc), obj); err == nil {
			t.Errorf("strict decode accepted:\n%s", doc)
		}
	}
}

func TestManifests(t *testing.T) {
	s := loadManifests(t)
	// Ours is "vpcchain"; calico-policy-only.yaml beside it has calico-node
	// (decoded strictly like every document, checked here only for policy-only).
	var ds *appsv1.DaemonSet
	for _, d := range s.daemonSets {
		switch d.Name {
		case "vpcchain":
			ds = d
		case "calico-node":
			checkCalicoPolicyOnly(t, d)
		}
	}
	if ds == nil {
		t.Fatalf("no DaemonSet named vpcchain among %d", len(s.daemonSets))
	}
	pod := ds.Spec.Template.Spec

	if !pod.HostNetwork {
		t.Error("DaemonSet: hostNetwork is not true")
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("DaemonSet: priorityClassName %q, want system-node-critical", pod.PriorityClassName)
	}
	if !slices.ContainsFunc(pod.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
	}) {
		t.Error("DaemonSet: no toleration {operator: Exists} (must run on every node, tainted or not)")
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "10%" {
		t.Errorf("DaemonSet: updateStrategy %+v, want RollingUpdate maxUnavailable 10%%", ds.Spec.UpdateStrategy)
	}
	sel := ds.Spec.Selector
	if sel == nil || len(sel.MatchLabels) == 0 {
		t.Fatal("DaemonSet: no selector")
	}
	for k, v := range sel.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("DaemonSet: selector %s=%s does not match the template's labels %v", k, v, ds.Spec.Template.Labels)
		}
	}

	// The main container: the daemon, with exactly the capabilities it needs.
	var main *corev1.Container
	for i := range pod.Containers {
		if slices.Contains(pod.Containers[i].Command, "/app/vpcchaind") {
			main = &pod.Containers[i]
		}
	}
	if main == nil {
		t.Fatal("DaemonSet: no container runs /app/vpcchaind")
	}
	sc := main.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("vpcchaind: no securityContext.capabilities")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("vpcchaind: privileged: true (it needs NET_ADMIN and NET_RAW only)")
	}
	for _, c := range []corev1.Capability{"NET_ADMIN", "NET_RAW"} {
		if !slices.Contains(sc.Capabilities.Add, c) {
			t.Errorf("vpcchaind: capability %s not added (have %v)", c, sc.Capabilities.Add)
		}
	}
	for _, p := range []*corev1.Probe{main.ReadinessProbe, main.LivenessProbe} {
		if p == nil || p.Exec == nil || !slices.ContainsFunc(p.Exec.Command, func(a string) bool { return strings.HasPrefix(a, "--check-") }) {
			t.Errorf("vpcchaind: probe %+v, want an exec probe of vpcchain-install --check-health/--check-live", p)
		}
	}
	// The daemon's own pod, from the downward API: the orphan check trusts
	// the runtime's sandboxes only when they include it.
	for name, field := range map[string]string{"MY_NODE_NAME": "spec.nodeName", "MY_POD_NAME": "metadata.name", "MY_POD_NAMESPACE": "metadata.namespace"} {
		if !slices.ContainsFunc(main.Env, func(e corev1.EnvVar) bool {
			return e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == field
		}) {
			t.Errorf("vpcchaind: no env %s from the downward API's %s", name, field)
		}
	}
	// Privileged: only the init container that sets the node's sysctls
	// (/proc/sys is read-only in an unprivileged container), and it mounts
	// nothing.
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
			continue
		}
		if !slices.Equal(c.Command, []string{"/app/vpcchaind", "--setup-node"}) || len(c.VolumeMounts) > 0 ||
			!slices.ContainsFunc(pod.InitContainers, func(ic corev1.Container) bool { return ic.Name == c.Name }) {
			t.Errorf("container %s is privileged (only an init container running vpcchaind --setup-node, with no mounts, may be)", c.Name)
		}
	}
	if !slices.ContainsFunc(pod.InitContainers, func(c corev1.Container) bool { return slices.Contains(c.Command, "/app/vpcchain-install") }) {
		t.Error("DaemonSet: no init container runs vpcchain-install")
	}

	// Host paths the chain needs.
	hostPaths := map[string]*corev1.HostPathVolumeSource{}
	volumes := map[string]bool{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = true
		if v.HostPath != nil {
			hostPaths[v.HostPath.Path] = v.HostPath
		}
	}
	for _, p := range []string{"/opt/cni/bin", "/etc/cni/net.d", "/var/run/vpcchain", "/run/xtables.lock", "/var/log"} {
		if hostPaths[p] == nil {
			t.Errorf("DaemonSet: no hostPath volume for %s", p)
		}
	}
	if hp := hostPaths["/run/xtables.lock"]; hp != nil && (hp.Type == nil || *hp.Type != corev1.HostPathFileOrCreate) {
		t.Error("DaemonSet: /run/xtables.lock must be hostPath type FileOrCreate")
	}

	// The daemon mounts only what it uses. It never reads or writes the CNI
	// directories (the installer's containers do), so it does not mount
	// them; the CRI socket's directory, which gives whoever holds the
	// socket the node, is mounted read-only (enough to connect) where the
	// daemon looks for the socket.
	hostOf := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostOf[v.Name] = v.HostPath.Path
		}
	}
	cm := s.configMaps["vpcchain-config"]
	if cm == nil {
		t.Fatal("no ConfigMap vpcchain-config")
	}
	criDir := filepath.Dir(cm.Data["VPCCHAIN_CRI_SOCKET"])
	criMounted := false
	for _, m := range main.VolumeMounts {
		switch hp := hostOf[m.Name]; {
		case hp == "/opt/cni/bin" || hp == "/etc/cni/net.d":
			t.Errorf("vpcchaind mounts %s (volume %s, readOnly %v): the daemon never uses it", hp, m.Name, m.ReadOnly)
		case hp == criDir:
			criMounted = true
			if !m.ReadOnly || m.MountPath != criDir {
				t.Errorf("vpcchaind mounts the CRI socket's directory %s at %s, readOnly %v; want it at %s, read-only", hp, m.MountPath, m.ReadOnly, criDir)
			}
		}
	}
	if !criMounted {
		t.Errorf("vpcchaind does not mount %s, the directory of VPCCHAIN_CRI_SOCKET", criDir)
	}

	// References resolve: volumes, ConfigMaps, the ServiceAccount, RBAC.
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				t.Errorf("container %s mounts undefined volume %q", c.Name, m.Name)
			}
		}
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil && s.configMaps[ef.ConfigMapRef.Name] == nil {
				t.Errorf("container %s: envFrom ConfigMap %q not in the manifests", c.Name, ef.ConfigMapRef.Name)
			}
		}
	}
	if len(main.EnvFrom) == 0 || main.EnvFrom[0].ConfigMapRef == nil {
		t.Error("vpcchaind: no envFrom ConfigMap")
	}
	if s.serviceAccounts[pod.ServiceAccountName] == nil {
		t.Errorf("DaemonSet: serviceAccountName %q not in the manifests", pod.ServiceAccountName)
	}
	bound := false
	for _, b := range s.bindings {
		if b.RoleRef.Kind != "ClusterRole" || s.clusterRoles[b.RoleRef.Name] == nil {
			t.Errorf("ClusterRoleBinding %s: roleRef %+v not in the manifests", b.Name, b.RoleRef)
		}
		for _, sub := range b.Subjects {
			if sub.Kind == "ServiceAccount" && sub.Name == pod.ServiceAccountName && sub.Namespace == ds.Namespace {
				bound = true
			}
		}
	}
	if !bound {
		t.Error("the DaemonSet's ServiceAccount is bound to no ClusterRole")
	}
	// The sidecar's preStop reads the DaemonSet it names, and only it.
	var preStopDS string
	for _, c := range pod.Containers {
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Exec != nil {
			for _, a := range c.Lifecycle.PreStop.Exec.Command {
				if v, ok := strings.CutPrefix(a, "--uninstall-if-deleted="); ok {
					preStopDS = v
				}
			}
		}
	}
	if preStopDS != ds.Name {
		t.Errorf("no container's preStop runs vpcchain-install --uninstall-if-deleted=%s (found %q)", ds.Name, preStopDS)
	}
	canRead := false
	for _, rb := range s.roleBindings {
		r := s.roles[rb.Namespace+"/"+rb.RoleRef.Name]
		if rb.RoleRef.Kind != "Role" || r == nil {
			t.Errorf("RoleBinding %s: roleRef %+v not in the manifests", rb.Name, rb.RoleRef)
			continue
		}
		bound := slices.ContainsFunc(rb.Subjects, func(sub rbacv1.Subject) bool {
			return sub.Kind == "ServiceAccount" && sub.Name == pod.ServiceAccountName && sub.Namespace == ds.Namespace
		})
		for _, rule := range r.Rules {
			if bound && rb.Namespace == ds.Namespace && slices.Equal(rule.APIGroups, []string{"apps"}) &&
				slices.Equal(rule.Resources, []string{"daemonsets"}) && slices.Equal(rule.Verbs, []string{"get"}) &&
				slices.Equal(rule.ResourceNames, []string{ds.Name}) {
				canRead = true
			}
		}
	}
	if !canRead {
		t.Errorf("no Role bound to the ServiceAccount allows exactly get on daemonsets/%s in %s", ds.Name, ds.Namespace)
	}
	// The daemon reads nodes; the policy hook's credential is its own:
	// get pods and patch their status, nothing else, and the daemon's
	// ServiceAccount holds neither (its token is in every pod of ours).
	if cr := s.clusterRoles["vpcchain"]; cr == nil || !allows(cr, "", "nodes", "get", "list", "watch") ||
		allows(cr, "", "pods", "get") || allows(cr, "", "pods/status", "patch") {
		t.Error("ClusterRole vpcchain: want get/list/watch on nodes and nothing on pods or pods/status")
	}
	hook := s.clusterRoles["vpcchain-policy-hook"]
	want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"pods/status"}, Verbs: []string{"get", "patch"}}}
	if hook == nil || !reflect.DeepEqual(hook.Rules, want) {
		t.Errorf("ClusterRole vpcchain-policy-hook: %+v, want exactly get pods and get and patch pods/status", hook)
	}
	if sa := s.serviceAccounts["vpcchain-policy-hook"]; sa == nil || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Error("ServiceAccount vpcchain-policy-hook: missing, or its token is mounted into pods")
	}
	// The installer mints tokens of the hook's ServiceAccount only.
	for _, r := range s.roles {
		for _, rule := range r.Rules {
			if slices.Contains(rule.Resources, "serviceaccounts/token") && !slices.Equal(rule.ResourceNames, []string{"vpcchain-policy-hook"}) {
				t.Errorf("Role %s may create tokens of %v, want vpcchain-policy-hook only", r.Name, rule.ResourceNames)
			}
		}
	}
	if s.admissionPolicy == nil || s.admissionBinding == nil || s.admissionBinding.Spec.PolicyName != s.admissionPolicy.Name ||
		!slices.Equal(s.admissionBinding.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Error("no ValidatingAdmissionPolicy bound with Deny to hold the policy hook to its node's pods")
	}
	// Custom networking reads the ENIConfigs.
	if cr := s.clusterRoles["vpcchain"]; cr == nil || !allows(cr, "crd.k8s.amazonaws.com", "eniconfigs", "get", "list", "watch") {
		t.Error("ClusterRole vpcchain does not allow get/list/watch eniconfigs.crd.k8s.amazonaws.com")
	}
	// Security groups for pods, in a file of its own: exactly the calls
	// daemon/podeni makes (a pod's annotation, the node's pods, its
	// CNINode's features), bound to the daemon's ServiceAccount.
	podENI := s.clusterRoles["vpcchain-pod-eni"]
	wantPodENI := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{"vpcresources.k8s.aws"}, Resources: []string{"cninodes"}, Verbs: []string{"get", "update"}}}
	if podENI == nil || !reflect.DeepEqual(podENI.Rules, wantPodENI) {
		t.Errorf("ClusterRole vpcchain-pod-eni: %+v, want %+v", podENI, wantPodENI)
	}
	if !slices.ContainsFunc(s.bindings, func(b *rbacv1.ClusterRoleBinding) bool {
		return b.RoleRef.Name == "vpcchain-pod-eni" && slices.ContainsFunc(b.Subjects, func(sub rbacv1.Subject) bool {
			return sub.Kind == "ServiceAccount" && sub.Name == "vpcchain" && sub.Namespace == "kube-system"
		})
	}) {
		t.Error("no ClusterRoleBinding gives the vpcchain ServiceAccount the ClusterRole vpcchain-pod-eni")
	}
}

// The ENIConfig CRD is the AWS VPC CNI's: group crd.k8s.amazonaws.com,
// version v1alpha1, kind ENIConfig, cluster-scoped, spec.subnet a string
// and spec.securityGroups a list of strings.
func TestENIConfigCRD(t *testing.T) {
	s := loadManifests(t)
	if len(s.crds) != 1 {
		t.Fatalf("%d CRDs in the manifests, want the ENIConfig CRD only", len(s.crds))
	}
	crd := s.crds[0]
	get := func(path ...any) any {
		var cur any = crd
		for _, p := range path {
			switch k := p.(type) {
			case string:
				m, _ := cur.(map[string]any)
				cur = m[k]
			case int:
				l, _ := cur.([]any)
				if k >= len(l) {
					return nil
				}
				cur = l[k]
			}
		}
		return cur
	}
	for _, c := range []struct {
		path []any
		want any
	}{
		{[]any{"metadata", "name"}, "eniconfigs.crd.k8s.amazonaws.com"},
		{[]any{"spec", "group"}, "crd.k8s.amazonaws.com"},
		{[]any{"spec", "scope"}, "Cluster"},
		{[]any{"spec", "names", "kind"}, "ENIConfig"},
		{[]any{"spec", "names", "plural"}, "eniconfigs"},
		{[]any{"spec", "versions", 0, "name"}, "v1alpha1"},
		{[]any{"spec", "versions", 0, "served"}, true},
		{[]any{"spec", "versions", 0, "storage"}, true},
		{[]any{"spec", "versions", 0, "schema", "openAPIV3Schema", "properties", "spec", "properties", "subnet", "type"}, "string"},
		{[]any{"spec", "versions", 0, "schema", "openAPIV3Schema", "properties", "spec", "properties", "securityGroups", "type"}, "array"},
		{[]any{"spec", "versions", 0, "schema", "openAPIV3Schema", "properties", "spec", "properties", "securityGroups", "items", "type"}, "string"},
	} {
		if got := get(c.path...); got != c.want {
			t.Errorf("CRD %v = %v, want %v", c.path, got, c.want)
		}
	}
}

func allows(cr *rbacv1.ClusterRole, group, resource string, verbs ...string) bool {
	for _, r := range cr.Rules {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) {
			ok := true
			for _, v := range verbs {
				ok = ok && slices.Contains(r.Verbs, v)
			}
			if ok {
				return true
			}
		}
	}
	return false
}

// TestConfigMapHasEveryKnob: every variable of README's tables of the
// daemon's and the installer's settings is in the ConfigMap (endpoint
// overrides excepted: absent means the SDK default), so the manifest
// documents every knob.
func TestConfigMapHasEveryKnob(t *testing.T) {
	s := loadManifests(t)
	var cm *corev1.ConfigMap
	for _, c := range s.configMaps {
		cm = c
	}
	if len(s.configMaps) != 1 {
		t.Fatalf("%d ConfigMaps, want 1", len(s.configMaps))
	}
	readme, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer readme.Close()
	varName := regexp.MustCompile("`([A-Z][A-Z0-9_]+)`")
	// The table of the AWS VPC CNI's settings lists those too that are
	// refused or have no effect: not knobs of ours.
	const peerSettings = "### The AWS VPC CNI's settings"
	inTable, inPeer := false, false
	var knobs []string
	sc := bufio.NewScanner(readme)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## Configuring the daemon"), strings.HasPrefix(line, "## Installing on a cluster"):
			inTable, inPeer = true, false
		case strings.HasPrefix(line, "## "):
			inTable = false
		case strings.HasPrefix(line, "### "):
			inPeer = line == peerSettings
		case inTable && !inPeer && strings.HasPrefix(line, "| `"):
			first := strings.SplitN(line, "|", 3)[1]
			for _, m := range varName.FindAllStringSubmatch(first, -1) {
				knobs = append(knobs, m[1])
			}
		}
	}
	if len(knobs) < 10 {
		t.Fatalf("found only %d variables in README's table: %v", len(knobs), knobs)
	}
	for _, k := range knobs {
		if strings.HasPrefix(k, "AWS_ENDPOINT_URL") || strings.HasPrefix(k, "AWS_EC2_METADATA") {
			continue
		}
		if _, ok := cm.Data[k]; !ok {
			t.Errorf("ConfigMap %s lacks %s (README's table documents it)", cm.Name, k)
		}
	}
}

// checkCalicoPolicyOnly: calico-node must run Felix policy-only, matching our
// interface names and leaving our route tables and mangle decisions alone.
func checkCalicoPolicyOnly(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	want := map[string]string{
		"CALICO_NETWORKING_BACKEND":       "none",
		"FELIX_INTERFACEPREFIX":           "eni",
		"FELIX_IPTABLESMANGLEALLOWACTION": "Return",
		"FELIX_ROUTETABLERANGES":          "65-99",
	}
	for _, c := range ds.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if v, ok := want[e.Name]; ok {
				if e.Value != v {
					t.Errorf("calico-node %s=%q, want %q", e.Name, e.Value, v)
				}
				delete(want, e.Name)
			}
		}
	}
	for k := range want {
		t.Errorf("calico-node lacks %s", k)
	}
}
