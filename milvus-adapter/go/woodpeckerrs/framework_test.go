//go:build test

package woodpeckerrs

import (
	"testing"

	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls"
)

// TestWALImplsFramework runs Milvus's own walimpls conformance framework
// (streaming/walimpls/test_framework.go of github.com/milvus-io/milvus/pkg/v2, unchanged;
// build tag `test`) against this package and a `woodpecker serve` on the embedded default,
// with the message count Milvus's own WALs use.
func TestWALImplsFramework(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	walimpls.NewWALImplsTestFramework(t, 100, s.builder()).Run()
	s.stop()
}

// TestWALImplsFrameworkOnEtcdAndMinIO runs it once more with etcd metadata and segments
// in MinIO.
func TestWALImplsFrameworkOnEtcdAndMinIO(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, stackConfig(t, dir))
	walimpls.NewWALImplsTestFramework(t, 100, s.builder()).Run()
	s.stop()
}
