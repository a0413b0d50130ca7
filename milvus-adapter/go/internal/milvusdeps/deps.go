//go:build milvusdeps

// Package milvusdeps is never built. It keeps the modules of Milvus's own Kafka WAL in
// go.mod and go.sum, so that Milvus's Kafka walimpls test runs from this module
// (`go test -tags test github.com/milvus-io/milvus/pkg/v2/streaming/walimpls/impls/kafka`,
// scripts/milvus-walimpls) against woodpecker serve's Kafka listener.
package milvusdeps

import _ "github.com/milvus-io/milvus/pkg/v2/streaming/walimpls/impls/kafka"
