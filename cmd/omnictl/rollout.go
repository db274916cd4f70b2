package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	meshkitv1 "github.com/omnirelay/omnirelay/internal/shared/api/meshkit/v1"
)

// canaryFlags are apply's rollout flags.
type canaryFlags struct {
	on    bool
	steps string
	pause time.Duration
	gates struct {
		window                      time.Duration
		minRequests                 uint64
		maxErrorRate, maxErrorRatio float64
		maxP99                      time.Duration
		maxP99Ratio                 float64
	}
}

func (f *canaryFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.on, "canary", false, "stage the change as a rollout: served to a growing share of the proxies (--steps, --pause), then promoted (omnictl rollout)")
	cmd.Flags().StringVar(&f.steps, "steps", "10,50,100", "with --canary: percents of proxies, growing, each held for --pause")
	cmd.Flags().DurationVar(&f.pause, "pause", 30*time.Second, "with --canary: how long each step is held before the next (and the last before promotion)")
	g := &f.gates
	cmd.Flags().Float64Var(&g.maxErrorRate, "max-error-rate", 0, "with --canary: roll back when the canary's error rate exceeds this (0..1) in the window")
	cmd.Flags().Float64Var(&g.maxErrorRatio, "max-error-ratio", 0, "with --canary: roll back when the canary's error rate exceeds the stable one's by this factor")
	cmd.Flags().DurationVar(&g.maxP99, "max-p99", 0, "with --canary: roll back when the canary's p99 latency exceeds this")
	cmd.Flags().Float64Var(&g.maxP99Ratio, "max-p99-ratio", 0, "with --canary: roll back when the canary's p99 exceeds the stable one's by this factor")
	cmd.Flags().Uint64Var(&g.minRequests, "min-requests", 0, "with --canary: canary requests the window must hold before a verdict (default 100)")
	cmd.Flags().DurationVar(&g.window, "window", 0, "with --canary: the gates' observation window (default 10s)")
}

var canaryOnly = []string{"steps", "pause", "max-error-rate", "max-error-ratio", "max-p99", "max-p99-ratio", "min-requests", "window"}

// request returns the rollout request for a document; an error names the
// flag at fault.
func (f *canaryFlags) request(cmd *cobra.Command, file string, data []byte) (*meshkitv1.StartRolloutRequest, error) {
	if !f.on {
		for _, name := range canaryOnly {
			if cmd.Flags().Changed(name) {
				return nil, fmt.Errorf("--%s needs --canary", name)
			}
		}
		return nil, nil
	}
	req := &meshkitv1.StartRolloutRequest{Filename: file, Yaml: data, Pause: durationpb.New(f.pause)}
	if g := f.gates; g.maxErrorRate > 0 || g.maxErrorRatio > 0 || g.maxP99 > 0 || g.maxP99Ratio > 0 {
		req.Gates = &meshkitv1.RolloutGates{MinRequests: g.minRequests, MaxErrorRate: g.maxErrorRate, MaxErrorRatio: g.maxErrorRatio, MaxP99Ratio: g.maxP99Ratio}
		if g.window > 0 {
			req.Gates.Window = durationpb.New(g.window)
		}
		if g.maxP99 > 0 {
			req.Gates.MaxP99 = durationpb.New(g.maxP99)
		}
	} else if g.window > 0 || g.minRequests > 0 {
		return nil, fmt.Errorf("--window and --min-requests set the gates' window: give a gate too (--max-error-rate, --max-error-ratio, --max-p99, --max-p99-ratio)")
	}
	for i, s := range strings.Split(f.steps, ",") {
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(s), "%"), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--steps %q: item %d (%q) is not a percent", f.steps, i, s)
		}
		req.Steps = append(req.Steps, uint32(n))
	}
	return req, nil
}

func (c *cli) startRollout(ctx context.Context, req *meshkitv1.StartRolloutRequest) error {
	return c.withConn(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := meshkitv1.NewConfigRolloutsClient(conn).Start(ctx, req)
		if err != nil {
			return apiError("apply --canary "+req.GetFilename(), err)
		}
		return c.printMessage(resp, func(w io.Writer) {
			fmt.Fprintf(w, "rollout %d started: %s at %d%% of the proxies, steps %s, pause %v (omnictl rollout status)\n",
				resp.GetId(), resp.GetCanaryVersion(), resp.GetPercent(), percents(resp.GetSteps()), resp.GetPause().AsDuration())
		})
	})
}

func percents(steps []uint32) string {
	parts := make([]string, len(steps))
	for i, s := range steps {
		parts[i] = fmt.Sprintf("%d%%", s)
	}
	return strings.Join(parts, " -> ")
}

func (c *cli) rolloutCmd() *cobra.Command {
	ro := &cobra.Command{
		Use:   "rollout status|pause|resume|promote|abort",
		Short: "Follow and control the rollout of a config change (omnictl apply --canary)",
	}
	var watch bool
	var every time.Duration
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the running rollout (or the last one): steps, share, proxies on each side, events; -w follows it live",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			last := ""
			for {
				var resp *meshkitv1.ConfigRollout
				err := c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
					var err error
					resp, err = meshkitv1.NewConfigRolloutsClient(conn).Get(ctx, &meshkitv1.GetRolloutRequest{})
					return err
				})
				if err != nil {
					return apiError("rollout status", err)
				}
				if !watch {
					return c.printMessage(resp, func(w io.Writer) { printRollout(w, resp, time.Now()) })
				}
				// Live view: redraw when anything but the clock changed,
				// and stop once the rollout is over.
				var b strings.Builder
				printRollout(&b, resp, time.Now())
				if view := b.String(); view != last {
					if c.output == "table" {
						fmt.Fprint(c.out, "\x1b[H\x1b[2J"+view)
					} else if err := c.printMessage(resp, nil); err != nil {
						return err
					}
					last = view
				}
				if p := resp.GetPhase(); p != "progressing" && p != "paused" {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(every):
				}
			}
		},
	}
	status.Flags().BoolVarP(&watch, "watch", "w", false, "follow the rollout live until it ends (redraws on change)")
	status.Flags().DurationVar(&every, "interval", time.Second, "with -w: how often to poll")
	ro.AddCommand(status)
	for _, a := range []struct{ name, short string }{
		{"pause", "Hold the rollout at its current step (its pause clock stops)"},
		{"resume", "Continue a paused rollout with the pause its step had left"},
		{"promote", "Serve the canary to every proxy now, as a new config version"},
		{"abort", "Serve the stable version to every proxy again"},
	} {
		var reason string
		cmd := &cobra.Command{
			Use:   a.name,
			Short: a.short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return c.withConn(cmd.Context(), func(ctx context.Context, conn *grpc.ClientConn) error {
					cl := meshkitv1.NewConfigRolloutsClient(conn)
					req := &meshkitv1.RolloutControlRequest{Reason: reason}
					var (
						resp *meshkitv1.ConfigRollout
						err  error
					)
					switch a.name {
					case "pause":
						resp, err = cl.Pause(ctx, req)
					case "resume":
						resp, err = cl.Resume(ctx, req)
					case "promote":
						resp, err = cl.Promote(ctx, req)
					case "abort":
						resp, err = cl.Abort(ctx, req)
					}
					if err != nil {
						return apiError("rollout "+a.name, err)
					}
					return c.printMessage(resp, func(w io.Writer) {
						fmt.Fprintf(w, "rollout %d %s", resp.GetId(), resp.GetPhase())
						if resp.GetPromoted() > 0 {
							fmt.Fprintf(w, " as version %d", resp.GetPromoted())
						} else if resp.GetPercent() > 0 {
							fmt.Fprintf(w, " at %d%%", resp.GetPercent())
						}
						fmt.Fprintln(w)
					})
				})
			},
		}
		cmd.Flags().StringVar(&reason, "reason", "", "recorded in the rollout's events")
		ro.AddCommand(cmd)
	}
	return ro
}

// printRollout renders a rollout for the terminal.
func printRollout(w io.Writer, r *meshkitv1.ConfigRollout, now time.Time) {
	fmt.Fprintf(w, "rollout %d: %s\n", r.GetId(), r.GetPhase())
	fmt.Fprintf(w, "  change:  %s (%s, by %s) over version %d (%s)\n", r.GetCanaryVersion(), r.GetFilename(), orDash(r.GetAuthor()), r.GetStable(), r.GetStableVersion())
	for _, s := range r.GetSummary() {
		fmt.Fprintf(w, "           %s\n", s)
	}
	var steps []string
	for i, s := range r.GetSteps() {
		mark := " "
		active := r.GetPhase() == "progressing" || r.GetPhase() == "paused"
		switch {
		case r.GetPhase() == "promoted" || (active && uint32(i) < r.GetStep()):
			mark = "✓"
		case active && uint32(i) == r.GetStep():
			mark = "▶"
		}
		steps = append(steps, fmt.Sprintf("%s%d%%", mark, s))
	}
	fmt.Fprintf(w, "  steps:   %s (pause %v)\n", strings.Join(steps, " "), r.GetPause().AsDuration())
	if r.GetPhase() == "progressing" || r.GetPhase() == "paused" {
		fmt.Fprintf(w, "  share:   %d%% of the proxies  %s\n", r.GetPercent(), bar(r.GetPercent()))
		if r.GetNextStepAt() != nil {
			what := "next step"
			if int(r.GetStep()) == len(r.GetSteps())-1 {
				what = "promotion"
			}
			fmt.Fprintf(w, "  %s in %v\n", what, r.GetNextStepAt().AsTime().Sub(now).Round(time.Second))
		}
	}
	fmt.Fprintf(w, "  proxies: %d on the canary, %d on the stable version\n", r.GetProxiesCanary(), r.GetProxiesStable())
	if g := r.GetGates(); g != nil {
		var gs []string
		if g.GetMaxErrorRate() > 0 {
			gs = append(gs, fmt.Sprintf("error rate <= %.2f%%", 100*g.GetMaxErrorRate()))
		}
		if g.GetMaxErrorRatio() > 0 {
			gs = append(gs, fmt.Sprintf("error rate <= %.1fx stable", g.GetMaxErrorRatio()))
		}
		if g.GetMaxP99() != nil {
			gs = append(gs, fmt.Sprintf("p99 <= %v", g.GetMaxP99().AsDuration()))
		}
		if g.GetMaxP99Ratio() > 0 {
			gs = append(gs, fmt.Sprintf("p99 <= %.1fx stable", g.GetMaxP99Ratio()))
		}
		fmt.Fprintf(w, "  gates:   %s (window %v, min %d requests)\n", strings.Join(gs, ", "), g.GetWindow().AsDuration(), g.GetMinRequests())
	}
	if v := r.GetVerdict(); v != nil {
		hold := ""
		if r.GetHolding() {
			hold = " (holding the step)"
		}
		fmt.Fprintf(w, "  verdict: %s%s\n", v.GetText(), hold)
	}
	if r.GetPromoted() > 0 {
		fmt.Fprintf(w, "  promoted as version %d\n", r.GetPromoted())
	}
	if r.GetReason() != "" {
		fmt.Fprintf(w, "  reason:  %s\n", r.GetReason())
	}
	fmt.Fprintln(w, "  events:")
	for _, e := range r.GetEvents() {
		fmt.Fprintf(w, "    %s  %s\n", e.GetAt().AsTime().UTC().Format("15:04:05"), e.GetText())
	}
}

func bar(percent uint32) string {
	const width = 20
	n := int(percent) * width / 100
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}
