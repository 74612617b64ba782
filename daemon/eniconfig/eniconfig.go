// Package eniconfig finds a node's ENIConfig for custom networking, as the
// AWS VPC CNI's users know it: the ENIConfig objects
// (crd.k8s.amazonaws.com/v1alpha1, cluster-scoped, spec.subnet and
// spec.securityGroups) and the node's label or annotation naming one.
//
// The Watcher keeps two client-go informers: one on the node itself (a
// field selector on its name) and one on the ENIConfigs; every change is
// turned into a Selection, reported when it differs from the last. It
// needs get/list/watch on nodes and eniconfigs, and create/patch on events
// for the Events it records on the node.
package eniconfig

import (
	"errors"
	"fmt"
	"regexp"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const (
	// DefaultKey is the label and the annotation naming a node's ENIConfig
	// unless ENI_CONFIG_LABEL_DEF / ENI_CONFIG_ANNOTATION_DEF say otherwise.
	DefaultKey = "k8s.amazonaws.com/eniConfig"
	// ExternalLabel names the ENIConfig when an external controller
	// manages it; it wins over everything else.
	ExternalLabel = "vpc.amazonaws.com/externalEniConfig"
	// DefaultName is used when the node names none.
	DefaultName = "default"
	// CRDName is the ENIConfig CRD.
	CRDName = "eniconfigs.crd.k8s.amazonaws.com"
)

// GVR is the ENIConfigs' resource.
var GVR = schema.GroupVersionResource{Group: "crd.k8s.amazonaws.com", Version: "v1alpha1", Resource: "eniconfigs"}

// ChooseName says which ENIConfig a node uses, in the AWS VPC CNI's order:
// the external label, the annotation annotationDef, the label labelDef,
// else "default". An empty value counts as unset. from says how, for
// messages.
func ChooseName(labels, annotations map[string]string, labelDef, annotationDef string) (name, from string) {
	switch {
	case labels[ExternalLabel] != "":
		return labels[ExternalLabel], fmt.Sprintf("label %q", ExternalLabel)
	case annotations[annotationDef] != "":
		return annotations[annotationDef], fmt.Sprintf("annotation %q", annotationDef)
	case labels[labelDef] != "":
		return labels[labelDef], fmt.Sprintf("label %q", labelDef)
	}
	return DefaultName, "the default name"
}

// Spec is an ENIConfig's spec.
type Spec struct {
	Subnet         string
	SecurityGroups []string
}

// EC2 resource IDs: a prefix and 8 (older) or 17 hexadecimal digits.
var (
	subnetID = regexp.MustCompile(`^subnet-([0-9a-f]{8}|[0-9a-f]{17})$`)
	groupID  = regexp.MustCompile(`^sg-([0-9a-f]{8}|[0-9a-f]{17})$`)
)

// MaxSecurityGroups is the most groups any ENI can have: Amazon VPC's
// quota of security groups per network interface is 5 by default and can
// be raised to 16. Between the two only EC2 knows the account's quota, and
// refuses the ENI (SecurityGroupsPerInterfaceLimitExceeded) over it.
const MaxSecurityGroups = 16

// Validate checks the spec's shape (EC2 checks that the IDs exist).
func (s Spec) Validate() error {
	var errs []error
	switch {
	case s.Subnet == "":
		errs = append(errs, errors.New("spec.subnet is missing"))
	case !subnetID.MatchString(s.Subnet):
		errs = append(errs, fmt.Errorf("spec.subnet %q is not a subnet ID (subnet- and 8 or 17 hex digits)", s.Subnet))
	}
	if len(s.SecurityGroups) > MaxSecurityGroups {
		errs = append(errs, fmt.Errorf("spec.securityGroups has %d groups; an ENI takes at most %d", len(s.SecurityGroups), MaxSecurityGroups))
	}
	seen := map[string]bool{}
	for _, g := range s.SecurityGroups {
		switch {
		case !groupID.MatchString(g):
			errs = append(errs, fmt.Errorf("spec.securityGroups: %q is not a security group ID (sg- and 8 or 17 hex digits)", g))
		case seen[g]:
			errs = append(errs, fmt.Errorf("spec.securityGroups: %s is listed twice", g))
		}
		seen[g] = true
	}
	return errors.Join(errs...)
}

// ParseSpec reads and validates an ENIConfig object's spec.
func ParseSpec(u *unstructured.Unstructured) (Spec, error) {
	var s Spec
	subnet, _, err := unstructured.NestedFieldNoCopy(u.Object, "spec", "subnet")
	if err != nil {
		return Spec{}, fmt.Errorf("spec.subnet: %w", err)
	}
	if subnet != nil {
		str, ok := subnet.(string)
		if !ok {
			return Spec{}, fmt.Errorf("spec.subnet is a %T, want a string", subnet)
		}
		s.Subnet = str
	}
	groups, _, err := unstructured.NestedFieldNoCopy(u.Object, "spec", "securityGroups")
	if err != nil {
		return Spec{}, fmt.Errorf("spec.securityGroups: %w", err)
	}
	if groups != nil {
		list, ok := groups.([]any)
		if !ok {
			return Spec{}, fmt.Errorf("spec.securityGroups is a %T, want a list of strings", groups)
		}
		for i, g := range list {
			str, ok := g.(string)
			if !ok {
				return Spec{}, fmt.Errorf("spec.securityGroups[%d] is a %T, want a string", i, g)
			}
			s.SecurityGroups = append(s.SecurityGroups, str)
		}
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// Selection is what the node's ENIConfig is now.
type Selection struct {
	Name string // the ENIConfig's name ("" when the node is not known yet)
	From string // how the name was chosen
	// Spec is the ENIConfig's, nil when it does not exist or is not usable.
	Spec *Spec
	// Err says why there is no usable Spec when it is not simply missing:
	// a malformed ENIConfig, the CRD not installed, the node not found.
	Err string
	// UID and Generation identify the version of the ENIConfig object
	// read ("" and 0 when there is none).
	UID        string
	Generation int64
}

// olderThan says s is an earlier version of the ENIConfig object last
// was read from: the same object (UID) at a lower generation, which only
// grows while the object exists.
func (s Selection) olderThan(last Selection) bool {
	return s.UID != "" && s.Name == last.Name && s.UID == last.UID && s.Generation < last.Generation
}
