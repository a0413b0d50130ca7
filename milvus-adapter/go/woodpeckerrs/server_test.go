package woodpeckerrs

import (
	"bufio"
	"context"
	"fmt"
	"math/rand"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/milvus-io/milvus/pkg/v2/streaming/util/types"
	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls"
	"github.com/milvus-io/milvus/pkg/v2/util/paramtable"
)

func TestMain(m *testing.M) {
	paramtable.Init()
	os.Exit(m.Run())
}

// server is a `woodpecker serve` process started by a test (the binary named by
// WOODPECKER_BIN: scripts/milvus-walimpls sets it; a missing binary fails the test).
type server struct {
	t          *testing.T
	cmd        *exec.Cmd
	dataDir    string
	milvusAddr string
	kafkaAddr  string
	exited     chan error
}

// startServer starts a server on dataDir with extra `serve` arguments (and global ones such
// as --config before `serve`).
func startServer(t *testing.T, dataDir string, global []string, extra ...string) *server {
	t.Helper()
	s := &server{t: t, dataDir: dataDir}
	require.NoError(t, os.MkdirAll(dataDir, 0o755))
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			if text, err := os.ReadFile(s.logPath()); err == nil {
				t.Logf("log of the server on %s:\n%s", dataDir, text)
			}
		}
	})
	s.spawn(global, extra, "127.0.0.1:0")
	return s
}

func (s *server) logPath() string {
	return s.dataDir + ".serve.log"
}

func woodpeckerBin(t *testing.T) string {
	bin := os.Getenv("WOODPECKER_BIN")
	if bin == "" {
		t.Fatal("WOODPECKER_BIN is not set: these tests run `woodpecker serve` (build it with `cargo build -p woodpecker`; scripts/milvus-walimpls sets it)")
	}
	return bin
}

func (s *server) spawn(global, extra []string, milvusAddr string) {
	s.t.Helper()
	require.NoError(s.t, s.trySpawn(global, extra, milvusAddr))
}

func (s *server) trySpawn(global, extra []string, milvusAddr string) error {
	args := append([]string{}, global...)
	args = append(args, "serve", "--data-dir", s.dataDir,
		"--kafka-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--milvus-addr", milvusAddr)
	args = append(args, extra...)
	cmd := exec.Command(woodpeckerBin(s.t), args...)
	// The server dies with the test binary, even when a timeout panic skips the clean-ups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// The server's log goes to a file beside its data, shown when the test fails.
	logFile, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	ready := make(chan [2]string, 1)
	go func() {
		var milvus, kafka string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if a, ok := strings.CutPrefix(line, "milvus wal listening on "); ok {
				milvus = strings.TrimSpace(a)
			}
			if a, ok := strings.CutPrefix(line, "kafka listening on "); ok {
				kafka = strings.TrimSpace(a)
			}
			if milvus != "" && kafka != "" {
				ready <- [2]string{milvus, kafka}
				milvus, kafka = "", ""
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case addrs := <-ready:
		s.milvusAddr, s.kafkaAddr = addrs[0], addrs[1]
	case err := <-exited:
		return fmt.Errorf("woodpecker serve exited before it was ready: %v", err)
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("woodpecker serve did not report its listeners within 2 minutes")
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

// stop stops the server with SIGTERM and requires a clean exit.
func (s *server) stop() {
	t := s.t
	t.Helper()
	if s.cmd == nil {
		return
	}
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-s.exited:
		require.NoError(t, err, "woodpecker serve after SIGTERM")
	case <-time.After(time.Minute):
		_ = s.cmd.Process.Kill()
		t.Fatal("woodpecker serve did not exit within a minute of SIGTERM")
	}
	s.cmd = nil
}

// restart stops the server and starts it again on the same data and the same Milvus
// address, so that connected clients reconnect to it.
func (s *server) restart(global []string, extra ...string) {
	s.t.Helper()
	addr := s.milvusAddr
	s.stop()
	var err error
	// The port may linger for a moment after the old process exits.
	for i := 0; i < 50; i++ {
		if err = s.trySpawn(global, extra, addr); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.t.Fatalf("restart failed: %v", err)
}

func (s *server) kill() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		<-s.exited
		s.cmd = nil
	}
}

func (s *server) builder() walimpls.OpenerBuilderImpls {
	return NewBuilder(Config{Address: s.milvusAddr})
}

// opener builds an opener on the server, closed with the test.
func (s *server) opener() walimpls.OpenerImpls {
	o, err := s.builder().Build()
	require.NoError(s.t, err)
	s.t.Cleanup(o.Close)
	return o
}

// stackConfig writes a woodpecker.yaml for etcd metadata and MinIO segments in a fresh
// etcd root and a fresh bucket (the WOODPECKER_TEST_* variables scripts/services prints),
// and returns the global arguments that select it.
func stackConfig(t *testing.T, dir string) []string {
	t.Helper()
	env := func(name string) string {
		v := os.Getenv(name)
		if v == "" {
			t.Fatalf("%s is not set: this test needs etcd and MinIO (eval \"$(scripts/services start)\")", name)
		}
		return v
	}
	s3, err := url.Parse(env("WOODPECKER_TEST_S3_ENDPOINT"))
	require.NoError(t, err)
	id := fmt.Sprintf("wprs-%d-%d", time.Now().UnixNano(), rand.Int63())
	yaml := fmt.Sprintf(`woodpecker:
  meta:
    type: etcd
  storage:
    type: minio
    rootPath: %s
etcd:
  endpoints: ["%s"]
  rootPath: %s
minio:
  address: "%s"
  port: %s
  useSSL: %t
  accessKeyID: "%s"
  secretAccessKey: "%s"
  region: "%s"
  bucketName: %s
  createBucket: true
  rootPath: files
`, filepath.Join(dir, "data"), env("WOODPECKER_TEST_ETCD_ENDPOINT"), id, s3.Hostname(), s3.Port(),
		s3.Scheme == "https", env("WOODPECKER_TEST_S3_ACCESS_KEY_ID"), env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY"),
		env("WOODPECKER_TEST_S3_REGION"), strings.ToLower(id))
	path := filepath.Join(dir, "woodpecker.yaml")
	require.NoError(t, os.WriteFile(path, []byte(yaml), 0o644))
	return []string{"--config", path}
}

func rw(name string, term int64) *walimpls.OpenOption {
	return &walimpls.OpenOption{Channel: types.PChannelInfo{Name: name, Term: term, AccessMode: types.AccessModeRW}}
}

func ro(name string, term int64) *walimpls.OpenOption {
	return &walimpls.OpenOption{Channel: types.PChannelInfo{Name: name, Term: term, AccessMode: types.AccessModeRO}}
}

func pchannel(prefix string) string {
	return fmt.Sprintf("%s_%d", prefix, rand.Int63())
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
