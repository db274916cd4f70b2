package main

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/spf13/cobra"

	"github.com/omnirelay/omnirelay/internal/shared/dslrules"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

// extCmd groups the extension package tools. pack, sign and verify work on
// files (on the author's machine, or anywhere); push and list talk to
// MeshKit's package store.
func (c *cli) extCmd() *cobra.Command {
	ext := &cobra.Command{
		Use:   "ext",
		Short: "Pack, sign and verify extension packages (.orx); push them to MeshKit, list them, roll them out",
	}
	ext.AddCommand(c.extPackCmd(), c.extSignCmd(), c.extVerifyCmd(), c.extPushCmd(), c.extListCmd())
	ext.AddCommand(c.extCanaryCmd(), c.extPromoteCmd(), c.extRollbackCmd()) // ext_rollout.go
	return ext
}

func (c *cli) extPackCmd() *cobra.Command {
	var m extpkg.Manifest
	var schema, out string
	cmd := &cobra.Command{
		Use:   "pack PAYLOAD --name NAME --version V --kind wasm|dsl|native --abi ABI --out FILE.orx",
		Short: "Pack a payload (Wasm module, DSL rules, shared object) and its manifest into an unsigned package",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			payload, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if schema != "" {
				if m.ConfigSchema, err = os.ReadFile(schema); err != nil {
					return err
				}
			}
			if m.Kind == extpkg.KindDSL {
				// Type-check the rules now rather than at the first proxy
				// that loads them; the error names the rule and field.
				if _, err := dslrules.Compile(payload); err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
			}
			pkg, err := extpkg.Pack(m, payload)
			if err != nil {
				return err
			}
			if out == "" {
				out = m.Name + ".orx"
			}
			if err := os.WriteFile(out, pkg, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "packed %s@%s (%s, %s) into %s: unsigned, sign it with omnictl ext sign\n", m.Name, m.Version, m.Kind, m.ABI, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&m.Name, "name", "", "extension name (lower-case letters, digits, . _ -)")
	f.StringVar(&m.Version, "version", "", "package version")
	f.StringVar(&m.Kind, "kind", "", "wasm, dsl or native")
	f.StringVar(&m.ABI, "abi", "", "ABI the payload is built for (proxy-wasm/0.2.1, omnirelay-native/1, ...)")
	f.StringSliceVar(&m.Capabilities, "capability", nil, "capability the proxy must have (repeatable)")
	f.StringVar(&schema, "config-schema", "", "JSON file describing the plugin config (optional)")
	f.StringVar(&out, "out", "", "package file to write (default NAME.orx)")
	return cmd
}

func (c *cli) extSignCmd() *cobra.Command {
	var keyPath, out string
	cmd := &cobra.Command{
		Use:   "sign FILE.orx --key PRIVATE.pem [--out FILE.orx]",
		Short: "Sign a package's manifest with an ed25519 key (replaces any signature)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if keyPath == "" {
				return fmt.Errorf("--key is required")
			}
			key, err := signing.LoadPrivateKey(keyPath)
			if err != nil {
				return err
			}
			pkg, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			s := signing.NewSigner(key)
			signed, err := extpkg.Sign(pkg, s)
			if err != nil {
				return err
			}
			if out == "" {
				out = args[0]
			}
			if err := writeFileAtomic(out, signed); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "signed %s with key %s\n", out, s.KeyID())
			return nil
		},
	}
	cmd.Flags().StringVar(&keyPath, "key", "", "PEM ed25519 private key")
	cmd.Flags().StringVar(&out, "out", "", "package file to write (default: in place)")
	return cmd
}

func (c *cli) extVerifyCmd() *cobra.Command {
	var trust string
	cmd := &cobra.Command{
		Use:   "verify FILE.orx --trust-root PUBLIC.pem",
		Short: "Check a package as a proxy would: signature by a trusted key, manifest, payload hash",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if trust == "" {
				return fmt.Errorf("--trust-root is required")
			}
			keys, err := signing.LoadPublicKeys(trust)
			if err != nil {
				return err
			}
			pkg, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			p, err := extpkg.Open(pkg, signing.NewVerifier(keys...))
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return c.printManifest(args[0], p, keys)
		},
	}
	cmd.Flags().StringVar(&trust, "trust-root", "", "PEM file of trusted ed25519 public keys")
	return cmd
}

func (c *cli) printManifest(file string, p *extpkg.Package, keys []ed25519.PublicKey) error {
	m := p.Manifest
	switch c.output {
	case "json", "yaml":
		b, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			return err
		}
		if c.output == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return err
			}
		}
		_, err = c.out.Write(append(b, '\n'))
		return err
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = signing.KeyID(k)
	}
	w := c.out
	fmt.Fprintf(w, "%s: OK (signed by a key of %s)\n", file, strings.Join(ids, ", "))
	row := func(k, v string) { fmt.Fprintf(w, "  %-13s %s\n", k+":", v) }
	row("name", m.Name)
	row("version", m.Version)
	row("kind", m.Kind)
	row("abi", m.ABI)
	row("capabilities", orDash(strings.Join(m.Capabilities, ", ")))
	row("payload", fmt.Sprintf("%d bytes, sha256 %s", len(p.Payload), m.PayloadSHA256))
	return nil
}

// writeFileAtomic replaces path, so a failed write never leaves half a
// package behind.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".orx-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
