// Package woodpeckerrs is a Milvus 2.6 WAL (the streaming node's walimpls plug-in) kept in a
// woodpecker-rs server: a client of its Milvus WAL gRPC service
// (woodpecker.milvus.v1.MilvusWal, served by `woodpecker serve` on --milvus-addr).
//
// Importing the package registers the builder and the message id unmarshaler under WALName.
// Milvus selects it with `mq.type: woodpeckerrs` once its wal_name.go knows that name (see
// the README of milvus-adapter/go). Settings come from Milvus's configuration (milvus.yaml,
// user.yaml or the environment, e.g. WOODPECKERRS_ADDRESS):
//
//	woodpeckerrs:
//	  address: 127.0.0.1:9096      # the server's --milvus-addr
//	  maxMessageSize: 67108864     # bytes, the largest gRPC message sent or received
//
// What the server guarantees and the package relies on: a read-write open with a term
// fences every older open of the pchannel (their appends fail with walimpls.ErrFenced) and
// is refused, with walimpls.ErrFenced, when the pchannel's durable term is higher; an append
// returns once the message is durable; ids grow across terms and restarts; Truncate(id)
// keeps id readable.
package woodpeckerrs

import (
	"strconv"

	"github.com/cockroachdb/errors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/milvus-io/milvus/pkg/v2/streaming/util/message"
	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls"
	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls/registry"
	"github.com/milvus-io/milvus/pkg/v2/util/paramtable"

	"github.com/woodpecker-rs/woodpecker-rs/milvus-adapter/go/walpb"
)

const (
	// WALName is the value this WAL is registered under. It lies outside the values of
	// milvus-proto's commonpb.WALName (0-4 and 999), so that values Milvus adds later do
	// not collide with it; a Milvus build that selects this WAL gives it the same value and
	// the name WALNameString in pkg/streaming/util/message/wal_name.go.
	WALName message.WALName = 100
	// WALNameString is the `mq.type` that selects this WAL.
	WALNameString = "woodpeckerrs"

	// DefaultAddress is `woodpecker serve`'s default --milvus-addr.
	DefaultAddress = "127.0.0.1:9096"
	// DefaultMaxMessageSize is the server's default largest gRPC message.
	DefaultMaxMessageSize = 64 << 20

	keyAddress        = "woodpeckerrs.address"
	keyMaxMessageSize = "woodpeckerrs.maxMessageSize"
)

func init() {
	registry.RegisterBuilder(&builderImpl{})
	message.RegisterMessageIDUnmsarshaler(WALName, UnmarshalMessageID)
}

// Config is where the server is.
type Config struct {
	// Address is the server's --milvus-addr, HOST:PORT.
	Address string
	// MaxMessageSize is the largest gRPC message sent or received, in bytes.
	MaxMessageSize int
}

// ConfigFromParams reads the `woodpeckerrs` section of Milvus's configuration.
func ConfigFromParams() (Config, error) {
	paramtable.Init()
	table := paramtable.GetBaseTable()
	cfg := Config{Address: DefaultAddress, MaxMessageSize: DefaultMaxMessageSize}
	if table == nil {
		return cfg, nil
	}
	if v := table.GetWithDefault(keyAddress, ""); v != "" {
		cfg.Address = v
	}
	if v := table.GetWithDefault(keyMaxMessageSize, ""); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return cfg, errors.Newf("%s: %q is not a positive number of bytes", keyMaxMessageSize, v)
		}
		cfg.MaxMessageSize = n
	}
	return cfg, nil
}

// NewBuilder is a builder with an explicit configuration (the registered one reads
// Milvus's).
func NewBuilder(cfg Config) walimpls.OpenerBuilderImpls {
	return &builderImpl{cfg: &cfg}
}

type builderImpl struct {
	cfg *Config
}

func (b *builderImpl) Name() message.WALName {
	return WALName
}

// Build makes the process's connection to the server. It does not wait for the server:
// calls made while it is unreachable fail with a retriable error.
func (b *builderImpl) Build() (walimpls.OpenerImpls, error) {
	var cfg Config
	if b.cfg != nil {
		cfg = *b.cfg
	} else {
		var err error
		if cfg, err = ConfigFromParams(); err != nil {
			return nil, err
		}
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	conn, err := grpc.NewClient(cfg.Address,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(cfg.MaxMessageSize),
			grpc.MaxCallSendMsgSize(cfg.MaxMessageSize),
		),
	)
	if err != nil {
		return nil, errors.Wrapf(err, "woodpeckerrs: connecting to %s", cfg.Address)
	}
	return &openerImpl{conn: conn, client: walpb.NewMilvusWalClient(conn), cfg: cfg}, nil
}
