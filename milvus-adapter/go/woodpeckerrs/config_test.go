package woodpeckerrs

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/milvus-io/milvus/pkg/v2/util/paramtable"
)

func TestConfigFromMilvusParams(t *testing.T) {
	table := paramtable.GetBaseTable()
	if env := os.Getenv("WOODPECKERRS_ADDRESS"); env != "" {
		// Milvus's environment source maps WOODPECKERRS_ADDRESS to woodpeckerrs.address.
		cfg, err := ConfigFromParams()
		require.NoError(t, err)
		assert.Equal(t, env, cfg.Address)
		return
	}
	cfg, err := ConfigFromParams()
	require.NoError(t, err)
	assert.Equal(t, Config{Address: DefaultAddress, MaxMessageSize: DefaultMaxMessageSize}, cfg)

	require.NoError(t, table.Save("woodpeckerrs.address", "10.0.0.5:9096"))
	require.NoError(t, table.Save("woodpeckerrs.maxMessageSize", "1048576"))
	defer func() {
		_ = table.Reset("woodpeckerrs.address")
		_ = table.Reset("woodpeckerrs.maxMessageSize")
	}()
	cfg, err = ConfigFromParams()
	require.NoError(t, err)
	assert.Equal(t, Config{Address: "10.0.0.5:9096", MaxMessageSize: 1 << 20}, cfg)

	require.NoError(t, table.Save("woodpeckerrs.maxMessageSize", "lots"))
	_, err = ConfigFromParams()
	assert.ErrorContains(t, err, "woodpeckerrs.maxMessageSize")
}
