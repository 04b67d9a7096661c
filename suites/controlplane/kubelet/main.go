// kubelet-streams serves the kubelet's streaming API for kwok's fake nodes (issue 21): exec,
// port-forward and container logs, the three calls the API server passes on to a node's kubelet
// (`pods/exec`, `pods/portforward`, `pods/log`). The protocol side is the kubelet's own code,
// k8s.io/cri-streaming (remotecommand.ServeExec, portforward.ServePortForward) and
// k8s.io/cri-client's log reader, as kwok uses them; what answers inside the pods is meshcheck's
// simulation, asked over a Unix socket (one connection a call, a JSON line each way).
//
// Why not kwok's own server: kwok v0.8.0 (pkg/kwok/server/debugging_exec.go) returns a command's
// failure wrapped in fmt.Errorf ("cmd wait: ...: exit status 56"), which ServeExec cannot read as
// an exit code (it type-asserts k8s.io/utils/exec.ExitError), so the API server's exec status is
// an InternalError without the ExitCode cause a kubelet sends (NonZeroExitCode, causes
// [{ExitCode, "56"}]). meshcheck reads curl's exit code from that cause: 56 is a reset, 7 a refusal.
//
// With -pod-network it also stands for the pods' addresses: every port the simulation's pods
// declare is listened on, on all addresses, and each connection passed on with the address it
// was made to (the service proxy's dial to an endpoint).
//
//	kubelet-streams -listen 127.0.0.1:PORT -cert serving.crt -key serving.key -socket PATH [-pod-network]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	criapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	crilogs "k8s.io/cri-client/pkg/logs"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// The kubelet's defaults (k8s v1.35.4 pkg/kubelet/apis/config/v1beta1/defaults.go#L134-L135
// StreamingConnectionIdleTimeout 4h; cri-streaming v0.36.1
// pkg/streaming/remotecommand/constants.go#L22 DefaultStreamCreationTimeout 30 s).
const (
	idleTimeout           = 4 * time.Hour
	streamCreationTimeout = 30 * time.Second
)

// sim asks meshcheck's simulation, one connection a call.
type sim struct{ socket string }

// call sends one request line and reads one answer line; the connection stays open for the
// caller (port-forward carries the stream on it).
func (s sim) call(ctx context.Context, request map[string]any) (net.Conn, map[string]any, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", s.socket)
	if err != nil {
		return nil, nil, fmt.Errorf("the simulation is not listening: %w", err)
	}
	line, _ := json.Marshal(request)
	if _, err := conn.Write(append(line, '\n')); err != nil {
		conn.Close()
		return nil, nil, err
	}
	answer, err := readLine(conn)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("the simulation did not answer: %w", err)
	}
	var out map[string]any
	if err := json.Unmarshal(answer, &out); err != nil {
		conn.Close()
		return nil, nil, err
	}
	if e, ok := out["error"].(string); ok {
		conn.Close()
		return nil, nil, errors.New(e)
	}
	return conn, out, nil
}

// readLine reads up to a newline byte by byte, so that nothing after it is consumed.
func readLine(r io.Reader) ([]byte, error) {
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := r.Read(b); err != nil {
			return nil, err
		}
		if b[0] == '\n' {
			return line, nil
		}
		line = append(line, b[0])
	}
}

// split is "pod/namespace", as kwok and cri-streaming pass a pod's name around.
func split(name string) (string, string) {
	pod, ns, _ := strings.Cut(name, "/")
	return pod, ns
}

// ExecInContainer runs the command in the simulation and, like the kubelet's runtime, fails with
// a CodeExitError carrying a non-zero exit code.
func (s sim) ExecInContainer(ctx context.Context, name, uid, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, timeout time.Duration) error {
	pod, ns := split(name)
	conn, answer, err := s.call(ctx, map[string]any{"op": "exec", "namespace": ns, "pod": pod, "container": container, "command": cmd})
	if err != nil {
		return err
	}
	conn.Close()
	if out != nil {
		stdout, _ := answer["stdout"].(string)
		_, _ = io.WriteString(out, stdout)
	}
	code, _ := answer["exit_code"].(float64)
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", int(code)), Code: int(code)}
	}
	return nil
}

// PortForward connects the stream to the port of the pod in the simulation.
func (s sim) PortForward(ctx context.Context, name, uid string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	pod, ns := split(name)
	return s.relay(ctx, map[string]any{"op": "portforward", "namespace": ns, "pod": pod, "port": port}, stream)
}

// podNetwork listens on every port the simulation's pods declare, on all addresses (the pod and
// Service ranges are this network namespace's own), and passes each connection on with the
// address it was made to: what the API server's service proxy dials reaches the pod's program.
func (s sim) podNetwork() {
	listening := map[int]bool{}
	for {
		conn, answer, err := s.call(context.Background(), map[string]any{"op": "ports"})
		if err == nil {
			conn.Close()
			ports, _ := answer["ports"].([]any)
			for _, p := range ports {
				port := int(p.(float64))
				if listening[port] {
					continue
				}
				listening[port] = true
				l, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", port))
				if err != nil {
					log.Printf("pod network: port %d: %v", port, err)
					continue
				}
				go s.accept(l)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (s sim) accept(l net.Listener) {
	for {
		client, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer client.Close()
			local := client.LocalAddr().(*net.TCPAddr)
			if err := s.relay(context.Background(), map[string]any{"op": "connect", "address": local.IP.String(), "port": local.Port}, client); err != nil {
				log.Printf("pod network: %s: %v", local, err)
			}
		}()
	}
}

// relay sends the call, then the client's bytes; once the simulation answers its line (an error
// when nothing listens there) the program's reply goes back.
func (s sim) relay(ctx context.Context, request map[string]any, client io.ReadWriter) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", s.socket)
	if err != nil {
		return fmt.Errorf("the simulation is not listening: %w", err)
	}
	defer conn.Close()
	line, _ := json.Marshal(request)
	if _, err := conn.Write(append(line, '\n')); err != nil {
		return err
	}
	go func() { _, _ = io.Copy(conn, client) }()
	answer, err := readLine(conn)
	if err != nil {
		return fmt.Errorf("the simulation did not answer: %w", err)
	}
	var out map[string]any
	if err := json.Unmarshal(answer, &out); err != nil {
		return err
	}
	if e, ok := out["error"].(string); ok {
		return errors.New(e)
	}
	_, err = io.Copy(client, conn)
	return err
}

// runtimeStub answers the log reader's question about a container's state as a runtime that
// cannot be reached, as kwok's does (pkg/kwok/server/debugging_logs.go): the reader then stops at
// the end of the file.
type runtimeStub struct{ criapi.RuntimeService }

func (runtimeStub) ContainerStatus(context.Context, string, bool) (*runtimeapi.ContainerStatusResponse, error) {
	return nil, status.Error(codes.Unavailable, "Unavailable")
}

// logs writes the container's log as the simulation has it, through the kubelet's log reader
// (tailLines, limitBytes, sinceSeconds, timestamps as a kubelet applies them).
func (s sim) logs(w http.ResponseWriter, r *http.Request) {
	ns, pod, container := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	conn, answer, err := s.call(r.Context(), map[string]any{"op": "logs", "namespace": ns, "pod": pod, "container": container})
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	conn.Close()
	text, _ := answer["text"].(string)
	file, err := os.CreateTemp("", "kubelet-streams-*.log")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer os.Remove(file.Name())
	// The CRI log format the kubelet reads (k8s v1.35 pkg/kubelet/kuberuntime/logs): one entry a
	// line, `<RFC3339Nano> stdout F <line>`.
	now := time.Now().UTC().Format(time.RFC3339Nano)
	writer := bufio.NewWriter(file)
	for _, line := range strings.SplitAfter(text, "\n") {
		if line != "" {
			fmt.Fprintf(writer, "%s stdout F %s", now, strings.TrimSuffix(line, "\n")+"\n")
		}
	}
	_ = writer.Flush()
	file.Close()
	q := r.URL.Query()
	opts := &crilogs.LogOptions{Timestamp: q.Get("timestamps") == "true"}
	if v, err := strconv.ParseInt(q.Get("tailLines"), 10, 64); err == nil {
		opts.TailLines = &v
	}
	if v, err := strconv.ParseInt(q.Get("limitBytes"), 10, 64); err == nil {
		opts.LimitBytes = &v
	}
	if v, err := strconv.ParseInt(q.Get("sinceSeconds"), 10, 64); err == nil {
		opts.Since = time.Now().Add(-time.Duration(v) * time.Second)
	}
	w.Header().Set("Content-Type", "text/plain")
	if err := crilogs.ReadLogs(r.Context(), file.Name(), "", opts, runtimeStub{}, w, w); err != nil {
		log.Printf("logs of %s/%s/%s: %v", ns, pod, container, err)
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:10250", "address to serve on")
	cert := flag.String("cert", "", "serving certificate")
	key := flag.String("key", "", "serving key")
	socket := flag.String("socket", "", "the simulation's Unix socket")
	podNetwork := flag.Bool("pod-network", false, "listen on the ports the simulation's pods declare, on all addresses")
	flag.Parse()
	if *socket == "" {
		log.Fatal("-socket is required")
	}
	s := sim{socket: filepath.Clean(*socket)}
	if *podNetwork {
		go s.podNetwork()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	// The kubelet's paths (k8s v1.35 pkg/kubelet/server/server.go InstallDebuggingHandlers).
	execute := func(w http.ResponseWriter, r *http.Request) {
		opts, err := remotecommand.NewOptions(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		name := r.PathValue("pod") + "/" + r.PathValue("ns")
		remotecommand.ServeExec(w, r, s, name, r.PathValue("uid"), r.PathValue("container"), r.URL.Query()["command"], opts, idleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
	}
	forward := func(w http.ResponseWriter, r *http.Request) {
		opts, err := portforward.NewV4Options(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		name := r.PathValue("pod") + "/" + r.PathValue("ns")
		portforward.ServePortForward(w, r, s, name, r.PathValue("uid"), opts, idleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
	}
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", execute)
	mux.HandleFunc("/exec/{ns}/{pod}/{uid}/{container}", execute)
	mux.HandleFunc("/portForward/{ns}/{pod}", forward)
	mux.HandleFunc("/portForward/{ns}/{pod}/{uid}", forward)
	mux.HandleFunc("/containerLogs/{ns}/{pod}/{container}", s.logs)
	server := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	log.Fatal(server.ListenAndServeTLS(*cert, *key))
}
