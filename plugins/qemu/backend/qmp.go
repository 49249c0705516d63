package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// QMPSocket is the name of QEMU's QMP control socket in a VM directory.
const QMPSocket = "qmp.sock"

// qmpTimeout bounds one QMP exchange when the caller's context has no
// earlier deadline. QEMU serves one QMP client at a time, so an exchange
// may also wait for another client (the failure monitor, an operator) to
// finish.
const qmpTimeout = 3 * time.Second

// qmpMessage is any message QEMU sends on a QMP socket: the greeting, a
// command's return or error, or an asynchronous event.
type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
}

// qmpStatus is the answer to query-status.
type qmpStatus struct {
	Status  string `json:"status"`
	Running bool   `json:"running"`
}

// qmpCall connects to the QMP socket at sock, negotiates capabilities,
// runs one command and returns its "return" value. One connection per
// command keeps the plugin stateless and never holds QEMU's single QMP
// seat for long.
func qmpCall(ctx context.Context, sock, command string, args any) (json.RawMessage, error) {
	deadline := time.Now().Add(qmpTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var d net.Dialer
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	conn, err := d.DialContext(dctx, "unix", sock)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(dctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	dec := json.NewDecoder(conn)
	enc := json.NewEncoder(conn)
	var greeting qmpMessage
	if err := dec.Decode(&greeting); err != nil {
		return nil, fmt.Errorf("qmp %s: read greeting: %w", command, err)
	}
	if greeting.QMP == nil {
		return nil, fmt.Errorf("qmp %s: %s does not speak QMP", command, sock)
	}
	if _, err := qmpExchange(dec, enc, "qmp_capabilities", nil); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	ret, err := qmpExchange(dec, enc, command, args)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	return ret, nil
}

// errQMPCommand marks an error QEMU returned for a command, as opposed
// to a failure to talk to QEMU at all.
var errQMPCommand = errors.New("QEMU refused the command")

// qmpExchange sends one command and reads messages, skipping events,
// until its return or error arrives.
func qmpExchange(dec *json.Decoder, enc *json.Encoder, command string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	if err := enc.Encode(req); err != nil {
		return nil, fmt.Errorf("send %s: %w", command, err)
	}
	for {
		var m qmpMessage
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("read answer to %s: %w", command, err)
		}
		switch {
		case m.Error != nil:
			return nil, fmt.Errorf("%w: %s: %s", errQMPCommand, m.Error.Class, m.Error.Desc)
		case m.Return != nil:
			return m.Return, nil
		}
	}
}

// queryStatus asks QEMU for the VM's run state.
func queryStatus(ctx context.Context, sock string) (qmpStatus, error) {
	var st qmpStatus
	ret, err := qmpCall(ctx, sock, "query-status", nil)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(ret, &st); err != nil {
		return st, fmt.Errorf("qmp query-status: parse %s: %w", ret, err)
	}
	return st, nil
}
