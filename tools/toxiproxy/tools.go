//go:build tools

// Package tools pins the toxiproxy release we build; see tools/build-servers.sh.
package tools

import (
	_ "github.com/Shopify/toxiproxy/v2/cmd/cli"
	_ "github.com/Shopify/toxiproxy/v2/cmd/server"
)
