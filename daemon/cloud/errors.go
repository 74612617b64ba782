package cloud

import (
	"errors"
	"net"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// ErrorCode returns the EC2 error code carried by err, or "".
func ErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// IsThrottle reports whether EC2 throttled the call (RequestLimitExceeded
// and the other throttling codes the SDK knows).
func IsThrottle(err error) bool {
	_, ok := retry.DefaultThrottleErrorCodes[ErrorCode(err)]
	return ok
}

// IsSubnetFull reports whether the subnet has no room for the addresses or
// /28 prefixes asked for.
func IsSubnetFull(err error) bool {
	switch ErrorCode(err) {
	case "InsufficientFreeAddressesInSubnet", "InsufficientCidrBlocks":
		return true
	}
	return false
}

// IsNotFound reports whether the resource (ENI, attachment, subnet...) does
// not exist.
func IsNotFound(err error) bool {
	return strings.HasSuffix(ErrorCode(err), ".NotFound")
}

// IsNotAssigned reports EC2's refusal to unassign an address or prefix the
// ENI does not have ("InvalidParameterValue: Some of the specified
// addresses are not assigned to interface ..."): for a release, the item is
// already given back.
func IsNotAssigned(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "InvalidParameterValue" && strings.Contains(ae.ErrorMessage(), "not assigned to interface")
}

// IsLimitExceeded reports whether the instance has no free ENI slot
// (AttachmentLimitExceeded) or the ENI no free address slot
// (PrivateIpAddressLimitExceeded).
func IsLimitExceeded(err error) bool {
	switch ErrorCode(err) {
	case "AttachmentLimitExceeded", "PrivateIpAddressLimitExceeded":
		return true
	}
	return false
}

// isServerError reports a 5xx answer: EC2 may or may not have acted.
func isServerError(err error) bool {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return true
	}
	switch ErrorCode(err) {
	case "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable":
		return true
	}
	return false
}

// maybeApplied reports whether a failed call may still have been carried out
// by EC2: no answer at all (lost response, timeout), a server error, or a
// throttle that may have followed an earlier attempt whose answer was lost.
// A definite client error (4xx other than throttling) means nothing happened.
func maybeApplied(err error) bool {
	if err == nil {
		return false
	}
	if ErrorCode(err) == "" {
		return true
	}
	return IsThrottle(err) || isServerError(err)
}

// sentWithoutAnswer reports an attempt that reached the wire but got no
// response: the request may have been carried out. Connection failures
// while dialing are not ambiguous and stay retryable.
func sentWithoutAnswer(err error) bool {
	var se *smithyhttp.RequestSendError
	if !errors.As(err, &se) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	return !strings.Contains(err.Error(), "connection refused")
}

// noBlindRetry wraps a retryer so that attempts whose answer was lost are not
// repeated: for a call that is not idempotent (AssignPrivateIpAddresses), a
// blind retry would do the work twice, and the caller must re-read the ENI
// instead.
type noBlindRetry struct{ aws.RetryerV2 }

func (r noBlindRetry) IsErrorRetryable(err error) bool {
	if sentWithoutAnswer(err) {
		return false
	}
	return r.RetryerV2.IsErrorRetryable(err)
}

// withoutBlindRetry is the per-call option installing noBlindRetry.
func withoutBlindRetry(o *ec2.Options) {
	if r, ok := o.Retryer.(aws.RetryerV2); ok {
		o.Retryer = noBlindRetry{r}
	}
}

// ErrorMessage returns EC2's message carried by err, or err's text.
func ErrorMessage(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode() + ": " + ae.ErrorMessage()
	}
	return err.Error()
}
