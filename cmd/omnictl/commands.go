package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

func (c *cli) applyCmd() *cobra.Command {
	var file string
	var canary canaryFlags
	cmd := &cobra.Command{
		Use:   "apply -f FILE [--canary --steps 10,50,100 --pause 30s]",
		Short: "Validate and store a new desired config (omnirelay.v1 YAML); '-' reads stdin",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f FILE is required")
			}
			var (
				data []byte
				err  error
			)
			if file == "-" {
				data, err = io.ReadAll(cmd.InOrStdin())
				file = "stdin"
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return fmt.Errorf("reading config: %w", err)
			}
			if req, err := canary.request(cmd, file, data); err != nil {
				return err
			} else if req != nil {
				return c.startRollout(cmd.Context(), req)
			}
			conn, err := c.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := c.call(cmd.Context())
			defer cancel()
			resp, err := meshkitv1.NewConfigClient(conn).Apply(ctx, &meshkitv1.ApplyRequest{Filename: file, Yaml: data})
			if err != nil {
				return apiError("apply "+file, err)
			}
			return c.printMessage(resp, func(w io.Writer) {
				switch {
				case resp.GetUnchanged():
					fmt.Fprintf(w, "unchanged %s: version %s is in force (number %d)\n", file, resp.GetVersion(), resp.GetNumber())
				case resp.GetNumber() > 0:
					fmt.Fprintf(w, "applied %s: version %s (number %d)\n", file, resp.GetVersion(), resp.GetNumber())
				default:
					fmt.Fprintf(w, "applied %s: version %s\n", file, resp.GetVersion())
				}
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "config file ('-' for stdin)")
	canary.register(cmd)
	return cmd
}

func (c *cli) getCmd() *cobra.Command {
	get := &cobra.Command{
		Use:   "get config|services|endpoints SERVICE|proxies",
		Short: "Show MeshKit state",
	}
	get.AddCommand(&cobra.Command{
		Use:   "config",
		Short: "Print the desired config (YAML, its version as a leading comment)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := meshkitv1.NewConfigClient(conn).Get(ctx, &meshkitv1.GetConfigRequest{})
				if err != nil {
					return apiError("get config", err)
				}
				doc := struct {
					Version string `json:"version" yaml:"version"`
					YAML    string `json:"yaml" yaml:"yaml"`
				}{resp.GetVersion(), string(resp.GetYaml())}
				switch c.output {
				case "json":
					b, err := json.MarshalIndent(doc, "", "  ")
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(c.out, "%s\n", b)
					return err
				case "yaml":
					b, err := yaml.MarshalWithOptions(doc, yaml.UseLiteralStyleIfMultiline(true))
					if err != nil {
						return err
					}
					_, err = c.out.Write(b)
					return err
				}
				// As a comment, the version keeps the output a valid config
				// to edit and apply again.
				_, err = fmt.Fprintf(c.out, "# version: %s\n%s", resp.GetVersion(), resp.GetYaml())
				return err
			})
		},
	})
	get.AddCommand(&cobra.Command{
		Use:   "services",
		Short: "List services with lease-valid endpoints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := meshkitv1.NewRegistryClient(conn).ListServices(ctx, &meshkitv1.ListServicesRequest{})
				if err != nil {
					return apiError("get services", err)
				}
				return c.printMessage(resp, func(w io.Writer) {
					row(w, "SERVICE", "ENDPOINTS", "HEALTHY")
					for _, s := range resp.GetServices() {
						row(w, s.GetName(), fmt.Sprint(s.GetEndpoints()), fmt.Sprint(s.GetHealthy()))
					}
				})
			})
		},
	})
	get.AddCommand(&cobra.Command{
		Use:   "endpoints SERVICE",
		Short: "List the lease-valid endpoints of a service",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := meshkitv1.NewRegistryClient(conn).ListEndpoints(ctx, &meshkitv1.ListEndpointsRequest{Service: args[0]})
				if err != nil {
					return apiError("get endpoints "+args[0], err)
				}
				now := time.Now()
				return c.printMessage(resp, func(w io.Writer) {
					row(w, "ID", "ADDRESS", "WEIGHT", "HEALTH", "LOCALITY", "LEASE")
					for _, e := range resp.GetEndpoints() {
						loc := strings.Trim(e.GetLocality().GetRegion()+"/"+e.GetLocality().GetZone(), "/")
						lease := "expires in " + e.GetLeaseExpiresAt().AsTime().Sub(now).Round(time.Second).String()
						row(w, e.GetId(), e.GetAddress(), fmt.Sprint(e.GetWeight()), e.GetHealth().String(), orDash(loc), lease)
					}
				})
			})
		},
	})
	get.AddCommand(&cobra.Command{
		Use:   "proxies",
		Short: "List xDS clients of every replica: replica, capabilities, acknowledged versions, rejections, withheld resources",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := meshkitv1.NewProxiesClient(conn).List(ctx, &meshkitv1.ListProxiesRequest{})
				if err != nil {
					return apiError("get proxies", err)
				}
				return c.printMessage(resp, func(w io.Writer) { proxyTable(w, resp.GetProxies(), time.Now()) })
			})
		},
	})
	return get
}

func proxyTable(w io.Writer, proxies []*meshkitv1.Proxy, now time.Time) {
	row(w, "NODE", "REPLICA", "CLUSTER", "KIND", "BUILD", "CONNECTED", "ACKED", "LAST NACK", "WITHHELD", "EXTENSIONS")
	for _, p := range proxies {
		connected := "no"
		if p.GetConnected() {
			connected = "yes"
			if p.GetConnectedSince() != nil {
				connected += " (" + now.Sub(p.GetConnectedSince().AsTime()).Round(time.Second).String() + ")"
			}
		}
		acked := make([]string, 0, len(p.GetAcked()))
		for t, v := range p.GetAcked() {
			acked = append(acked, shortType(t)+"="+v)
		}
		sort.Strings(acked)
		nack := "-"
		if n := p.GetLastNack(); n != nil {
			nack = fmt.Sprintf("%s %s: %s", shortType(n.GetTypeUrl()), n.GetVersion(), n.GetDetail())
		}
		withheld := make([]string, 0, len(p.GetWithheld()))
		for _, wh := range p.GetWithheld() {
			withheld = append(withheld, fmt.Sprintf("%s/%s (%s)", shortType(wh.GetTypeUrl()), wh.GetName(), wh.GetReason()))
		}
		row(w, p.GetNodeId(), orDash(p.GetReplica()), orDash(p.GetCluster()), orDash(p.GetKind()), orDash(p.GetBuild()), connected,
			orDash(strings.Join(acked, " ")), nack, orDash(strings.Join(withheld, "; ")), extensionsColumn(p))
	}
}

func (c *cli) registerCmd() *cobra.Command {
	var (
		ep        meshkitv1.Endpoint
		loc       meshkitv1.Locality
		ttl       time.Duration
		heartbeat bool
		metadata  map[string]string
	)
	cmd := &cobra.Command{
		Use:   "register --service S --address HOST:PORT",
		Short: "Register an endpoint under a lease; with --heartbeat, renew it until interrupted, then deregister",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if loc.GetRegion() != "" || loc.GetZone() != "" {
				ep.Locality = &loc
			}
			ep.Metadata = metadata
			ep.Ttl = durationpb.New(ttl)
			conn, err := c.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			rc := meshkitv1.NewRegistryClient(conn)
			reg, err := c.register(cmd.Context(), rc, &ep)
			if err != nil {
				return err
			}
			if err := c.printMessage(reg, func(w io.Writer) {
				fmt.Fprintf(w, "registered %s/%s at %s, lease %s\n", reg.GetEndpoint().GetService(), reg.GetEndpoint().GetId(),
					reg.GetEndpoint().GetAddress(), reg.GetEndpoint().GetTtl().AsDuration())
			}); err != nil || !heartbeat {
				return err
			}
			return c.keepAlive(cmd.Context(), rc, &ep, reg.GetEndpoint().GetId())
		},
	}
	f := cmd.Flags()
	f.StringVar(&ep.Service, "service", "", "service name (required)")
	f.StringVar(&ep.Address, "address", "", "endpoint address host:port (required)")
	f.StringVar(&ep.Id, "id", "", "endpoint id (default: derived from the address)")
	f.Uint32Var(&ep.Weight, "weight", 1, "load-balancing weight, 1..128")
	f.StringVar(&loc.Region, "region", "", "locality region")
	f.StringVar(&loc.Zone, "zone", "", "locality zone")
	f.DurationVar(&ttl, "ttl", 30*time.Second, "lease length, 1s..1h")
	f.BoolVar(&heartbeat, "heartbeat", false, "keep renewing the lease (every ttl/3) until SIGINT, then deregister")
	f.StringToStringVar(&metadata, "metadata", nil, "metadata key=value pairs")
	_ = cmd.MarkFlagRequired("service")
	_ = cmd.MarkFlagRequired("address")
	return cmd
}

func (c *cli) register(ctx context.Context, rc meshkitv1.RegistryClient, ep *meshkitv1.Endpoint) (*meshkitv1.RegisterResponse, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	reg, err := rc.Register(cctx, &meshkitv1.RegisterRequest{Endpoint: ep})
	if err != nil {
		return nil, apiError("register", err)
	}
	return reg, nil
}

// keepAlive renews the lease at a third of its TTL, so two lost heartbeats
// in a row still leave it valid. A lease that lapsed anyway (MeshKit down
// for longer than the TTL) is registered again. When ctx ends (SIGINT) the
// endpoint is deregistered, so that it leaves EDS at once rather than at
// expiry.
func (c *cli) keepAlive(ctx context.Context, rc meshkitv1.RegistryClient, ep *meshkitv1.Endpoint, id string) error {
	ep.Id = id
	t := time.NewTicker(ep.GetTtl().AsDuration() / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := c.call(context.WithoutCancel(ctx))
			defer cancel()
			if _, err := rc.Deregister(dctx, &meshkitv1.DeregisterRequest{Service: ep.GetService(), Id: id}); err != nil {
				return apiError("deregister on exit", err)
			}
			fmt.Fprintf(c.errOut, "deregistered %s/%s\n", ep.GetService(), id)
			return nil
		case <-t.C:
		}
		hctx, cancel := c.call(ctx)
		_, err := rc.Heartbeat(hctx, &meshkitv1.HeartbeatRequest{Service: ep.GetService(), Id: id})
		cancel()
		if err == nil || ctx.Err() != nil {
			continue
		}
		err = apiError("heartbeat", err)
		if isCode(err, "NotFound") {
			fmt.Fprintf(c.errOut, "lease of %s/%s lapsed; registering again\n", ep.GetService(), id)
			if _, err = c.register(ctx, rc, ep); err == nil {
				continue
			}
		}
		fmt.Fprintf(c.errOut, "omnictl: %v (retrying)\n", err)
	}
}

func (c *cli) deregisterCmd() *cobra.Command {
	var service, id string
	cmd := &cobra.Command{
		Use:   "deregister --service S --id ID",
		Short: "Remove an endpoint from the registry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := meshkitv1.NewRegistryClient(conn).Deregister(ctx, &meshkitv1.DeregisterRequest{Service: service, Id: id})
				if err != nil {
					return apiError("deregister", err)
				}
				return c.printMessage(resp, func(w io.Writer) { fmt.Fprintf(w, "deregistered %s/%s\n", service, id) })
			})
		},
	}
	cmd.Flags().StringVar(&service, "service", "", "service name (required)")
	cmd.Flags().StringVar(&id, "id", "", "endpoint id (required)")
	_ = cmd.MarkFlagRequired("service")
	_ = cmd.MarkFlagRequired("id")
	return cmd
}
