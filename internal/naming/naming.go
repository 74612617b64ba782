// Package naming is where the host veth naming rule used to live; the rule
// is in internal/veth now, with the rest of the veth code. This forwarder
// remains only for conflist and daemon/config, which are being changed
// elsewhere: switch them to veth.ValidatePrefix and delete the package.
package naming

import "github.com/vpcchain/vpcchain/internal/veth"

// ValidatePrefix is veth.ValidatePrefix.
func ValidatePrefix(p string) error { return veth.ValidatePrefix(p) }
