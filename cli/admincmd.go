package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
)

// The operator commands: status, members, shards (list, move,
// transfer-leader), rebalance, drain, operation and remove, each one or a
// few calls to the admin API (admin.go); kv is in kvcmd.go.

// adminEnv is what every operator command is built with.
type adminEnv struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
}

// options returns fresh flags for one command.
func (e adminEnv) options() *adminOptions {
	return &adminOptions{lookupEnv: e.lookupEnv}
}

// newAdminCommands builds the operator commands, with the environment
// supplied so tests need not touch the process's.
func newAdminCommands(stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) []*cobra.Command {
	e := adminEnv{stdout: stdout, stderr: stderr, lookupEnv: lookupEnv}
	return []*cobra.Command{
		e.newStatusCommand(),
		e.newMembersCommand(),
		e.newShardsCommand(),
		e.newRebalanceCommand(),
		e.newDrainCommand(),
		e.newRemoveCommand(),
		e.newActivateCommand(),
		e.newKVCommand(),
		e.newOperationCommand(),
	}
}

func (e adminEnv) newStatusCommand() *cobra.Command {
	o := e.options()
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster as one node sees it",
		Long: `Show the cluster as the node at --addr sees it: its id, the cluster's id, whether
it is ready to serve (and why not), the meta group's leader ("none" while it
has none this node can reach, or leads without a quorum), the version of the
cluster map, how many nodes and shards there are (and which nodes this node
does not see alive or cannot reach), how many replicas each shard keeps (and
how many shards have fewer), and the rebalance, drain or heal that is running,
if any.

'roost dev' answers this command, 'roost kv' and 'roost shards locate' too;
the other operator commands need a cluster.` + adminConnectHelp,
		Example: `  # the local node
  roost status

  # another node of a cluster that has an admin token
  ROOST_ADMIN_TOKEN=$(cat admin.token) roost status --addr 10.0.0.5:8789

  # for a script
  roost status -o json | jq .ready`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			var st apiStatus
			raw, err := c.call(cmd.Context(), http.MethodGet, "/v1/status", nil, &st)
			if err != nil {
				return err
			}
			if o.json() {
				return writeJSON(e.stdout, raw)
			}
			writeStatusTable(e.stdout, st)
			return nil
		},
	}
	o.register(cmd)
	return cmd
}

func writeStatusTable(w io.Writer, st apiStatus) {
	tw := newTable(w)
	ready := "yes"
	if !st.Ready {
		ready = "no"
		if st.Reason != "" {
			ready += ": " + st.Reason
		}
	}
	op := "none"
	if st.Operation != nil {
		op = describeOperation(*st.Operation)
	}
	for _, r := range [][2]string{
		{"node", st.NodeID},
		{"cluster", st.ClusterID},
		{"mode", st.Mode},
		{"ready", ready},
		{"meta leader", metaLeaderCell(st)},
		{"map version", st.MapVersion.String()},
		{"nodes", nodesCell(st)},
		{"shards", st.Shards.count()},
		{"replicas", replicasCell(st)},
		{"operation", op},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], cell(r[1]))
	}
	tw.Flush()
}

// replicasCell is how many replicas each shard keeps, and how many shards
// have fewer: the setting alone hid that a drain left every shard short.
func replicasCell(st apiStatus) string {
	n := st.Replicas.count()
	if st.UnderReplicated == 0 {
		return n
	}
	return fmt.Sprintf("%s (%d of the shards have fewer: too few active nodes, or a heal or move to come)", n, st.UnderReplicated)
}

// nodesCell is status's node count, with the nodes the answering node
// cannot reach, if any: a node that is down shows here, not only in
// 'roost members'.
func nodesCell(st apiStatus) string {
	n := st.Nodes.count()
	if len(st.Unreachable) == 0 {
		return n
	}
	return fmt.Sprintf("%s (down or unreachable from this node: %s)", n, strings.Join(st.Unreachable, ", "))
}

// metaLeaderCell is status's meta leader: "none" for a cluster node that
// knows of none it can reach, blank in dev mode (no meta group).
func metaLeaderCell(st apiStatus) string {
	if st.Mode == "cluster" {
		return cmp.Or(st.MetaLeader, "none")
	}
	return st.MetaLeader
}

// describeOperation is an operation on one line, as status shows it.
func describeOperation(op apiOperation) string {
	kind := op.Kind
	if kind == "" {
		kind = "operation"
	}
	s := fmt.Sprintf("%s %s: %s, %s", kind, op.ID, op.State, op.progress())
	if op.State == opRunning {
		if eta, ok := op.serverETA(); ok {
			s += ", ETA " + formatETA(eta)
		}
		s += op.stall()
	}
	if started := startedText(op.Started); started != "" {
		s += ", started " + started
	}
	if op.Error != "" {
		s += ": " + op.Error
	}
	return s
}

func (e adminEnv) newMembersCommand() *cobra.Command {
	o := e.options()
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the cluster's nodes, their state and addresses",
		Long: `List every node in the cluster map, sorted by id: its state (active, draining
or removed), whether gossip finds it alive, whether the node at --addr reaches
it over Raft's transport (a node cut off from the others may still see them
alive in gossip, never reachable), how many shard replicas it holds and leads,
whether it is a voter or a non-voter of the meta group (which holds the
cluster map; "-" if it is in neither), and its admin, app (http), grpc and
gossip addresses.` + adminConnectHelp,
		Example: `  roost members
  roost members --addr 10.0.0.5:8789 -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			var resp struct {
				Members []apiMember `json:"members"`
			}
			raw, err := c.call(cmd.Context(), http.MethodGet, "/v1/members", nil, &resp)
			if err != nil {
				return err
			}
			if o.json() {
				return writeJSON(e.stdout, raw)
			}
			writeMembersTable(e.stdout, resp.Members)
			return nil
		},
	}
	o.register(cmd)
	return cmd
}

func writeMembersTable(w io.Writer, members []apiMember) {
	members = slices.Clone(members)
	sort.SliceStable(members, func(i, j int) bool { return members[i].ID < members[j].ID })
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSTATE\tALIVE\tREACHABLE\tREPLICAS\tLEADERS\tMETA\tADMIN\tHTTP\tGRPC\tGOSSIP")
	for _, m := range members {
		reachable := "-"
		if m.Reachable != nil {
			reachable = yesNo(*m.Reachable)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(m.ID), cell(m.State), yesNo(m.Alive), reachable,
			cell(m.Replicas.count()), cell(m.Leaders.count()), cell(m.Meta), cell(m.Admin), cell(m.HTTP), cell(m.GRPC), cell(m.Gossip))
	}
	tw.Flush()
}

// newShardsCommand is `roost shards` and its subcommands.
func (e adminEnv) newShardsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "shards",
		Short: "List shards, move a replica, or move a shard's leadership",
		Long: `Work with shards: list them with their replicas and leaders, find the shard of
an object, move one replica of a shard to another node, or make another replica
the shard's leader.`,
		Example: `  roost shards list
  roost shards locate A --binding COUNTER
  roost shards move 7 --to n4 --wait
  roost shards transfer-leader 7 --to n2`,
	}
	asGroup(cmd)
	cmd.AddCommand(e.newShardsListCommand(), e.newShardsLocateCommand(), e.newShardsMoveCommand(), e.newTransferLeaderCommand())
	return cmd
}

// apiLocation is GET /v1/objects/{binding}'s answer.
type apiLocation struct {
	Binding  string   `json:"binding"`
	Class    string   `json:"class"`
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Shard    int      `json:"shard"`
	Replicas []string `json:"replicas"`
	Leader   string   `json:"leader"`
}

func (e adminEnv) newShardsLocateCommand() *cobra.Command {
	o := e.options()
	var binding string
	var byID bool
	cmd := &cobra.Command{
		Use:   "locate NAME --binding BINDING",
		Short: "Say which shard an object is on, and which nodes hold and lead it",
		Long: `Say where the object NAME of a Durable Object binding lives: its ID, its shard,
the shard's replicas and its leader (the node that runs the object; "-" while
the shard has none). With --id, NAME is the object's ID (64 hex digits, as
id.String() gives it) rather than the name it was made from.` + adminConnectHelp,
		Example: `  roost shards locate A --binding COUNTER
  roost shards locate 0167a1c9...b43d --id --binding ROOMS -o json`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if binding == "" {
				return &usageError{cmd: cmd, err: errors.New("--binding is required: the Durable Object binding the object belongs to")}
			}
			if args[0] == "" {
				return &usageError{cmd: cmd, err: errors.New("NAME is empty: give the object's name (or, with --id, its ID)")}
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			q := url.Values{"name": {args[0]}}
			if byID {
				q = url.Values{"id": {args[0]}}
			}
			var loc apiLocation
			raw, err := c.call(cmd.Context(), http.MethodGet, "/v1/objects/"+url.PathEscape(binding)+"?"+q.Encode(), nil, &loc)
			if err != nil {
				return err
			}
			if o.json() {
				return writeJSON(e.stdout, raw)
			}
			tw := newTable(e.stdout)
			for _, r := range [][2]string{
				{"object", loc.Name},
				{"id", loc.ID},
				{"class", loc.Class},
				{"shard", strconv.Itoa(loc.Shard)},
				{"leader", loc.Leader},
				{"replicas", strings.Join(loc.Replicas, ",")},
			} {
				if r[0] == "object" && r[1] == "" {
					continue // asked by ID
				}
				fmt.Fprintf(tw, "%s\t%s\n", r[0], cell(r[1]))
			}
			tw.Flush()
			return nil
		},
	}
	cmd.Flags().StringVar(&binding, "binding", "", "the Durable Object binding, as the Worker's env has it (required)")
	cmd.Flags().BoolVar(&byID, "id", false, "NAME is the object's ID, not its name")
	o.register(cmd)
	return cmd
}

func (e adminEnv) newShardsListCommand() *cobra.Command {
	o := e.options()
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the shards with their replicas, leaders and lag",
		Long: `List every shard, sorted by number: the version of its placement in the cluster
map, its leader ("-" while it has none), its replicas as the map places them,
and LAG, how many entries of the leader's log (without a leader, of the
replica furthest ahead) the replica furthest behind does not hold yet ("?"
when a replica did not answer).

In REPLICAS the leader is marked with a *, and a replica that is still
catching up as a non-voter (a move in progress) with a +.` + adminConnectHelp,
		Example: `  roost shards list
  roost shards list -o json | jq '.shards[] | select(.leader == "")'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			shards, raw, err := listShards(cmd.Context(), c)
			if err != nil {
				return err
			}
			if o.json() {
				return writeJSON(e.stdout, raw)
			}
			writeShardsTable(e.stdout, shards)
			return nil
		},
	}
	o.register(cmd)
	return cmd
}

func listShards(ctx context.Context, c *adminClient) ([]apiShard, json.RawMessage, error) {
	var resp struct {
		Shards []apiShard `json:"shards"`
	}
	raw, err := c.call(ctx, http.MethodGet, "/v1/shards", nil, &resp)
	return resp.Shards, raw, err
}

func writeShardsTable(w io.Writer, shards []apiShard) {
	shards = slices.Clone(shards)
	sort.SliceStable(shards, func(i, j int) bool { return shards[i].ID < shards[j].ID })
	tw := newTable(w)
	fmt.Fprintln(tw, "SHARD\tVERSION\tLEADER\tREPLICAS\tLAG")
	for _, s := range shards {
		replicas := make([]string, len(s.Replicas))
		for i, r := range s.Replicas {
			replicas[i] = r
			if r == s.Leader {
				replicas[i] += "*"
			} else if slices.Contains(s.NonVoters, r) {
				replicas[i] += "+"
			}
		}
		lag := "-"
		if len(s.ReplicaLag) > 0 {
			var most int64
			silent := false
			for _, n := range s.ReplicaLag {
				if n < 0 { // the replica did not answer: its lag is unknown
					silent = true
				}
				most = max(most, n)
			}
			lag = strconv.FormatInt(most, 10)
			if silent {
				lag = "?"
			}
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", s.ID, s.Version, cell(s.Leader), cell(strings.Join(replicas, ",")), lag)
	}
	tw.Flush()
}

func (e adminEnv) newShardsMoveCommand() *cobra.Command {
	o := e.options()
	var to, from string
	var wait bool
	cmd := &cobra.Command{
		Use:   "move SHARD --to NODE [--from NODE]",
		Short: "Move one replica of a shard to another node",
		Long: `Move one replica of SHARD to the node --to: the cluster map is changed at once,
then the shard's leader adds the new replica, lets it catch up as a
non-voter, makes it a voter and removes the old one. --from names the replica
to drop; without it the one the planner would drop goes. The cluster refuses
a move that would leave the shard without a quorum.

Without --wait the command returns once the map has changed; 'roost shards
list' shows the shard converging. With --wait it follows the shard on stderr
and returns once its voters are the map's replicas (Ctrl-C stops waiting,
not the move).` + adminConnectHelp,
		Example: `  # move shard 7's replica from n1 to n4 and wait until it is done
  roost shards move 7 --to n4 --from n1 --wait

  # let the planner choose which replica to drop
  roost shards move 12 --to n5`,
		Args: exactArgs("SHARD"),
		RunE: func(cmd *cobra.Command, args []string) error {
			shard, err := parseShard(cmd, args[0])
			if err != nil {
				return err
			}
			if to == "" {
				return &usageError{cmd: cmd, err: errors.New("--to is required: the node to move the replica to")}
			}
			if err := checkNodeID(cmd, "--to", to); err != nil {
				return err
			}
			if from != "" {
				if err := checkNodeID(cmd, "--from", from); err != nil {
					return err
				}
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			body := struct {
				To   string `json:"to"`
				From string `json:"from,omitempty"`
			}{to, from}
			var m apiMove
			raw, err := c.call(cmd.Context(), http.MethodPost, fmt.Sprintf("/v1/shards/%d/move", shard), body, &m)
			if err != nil {
				return err
			}
			if m.To == "" {
				m.Shard, m.To = shard, to
			}
			if !o.json() {
				fmt.Fprintf(e.stdout, "shard %d: moving a replica from %s to %s (shard version %d)\n", m.Shard, cell(m.From), m.To, m.Version)
			}
			if wait {
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				if err := waitMove(ctx, c, e.stderr, m); err != nil {
					return err
				}
			}
			if o.json() {
				return writeJSON(e.stdout, raw)
			}
			if wait {
				fmt.Fprintf(e.stdout, "shard %d: moved; its voters are the map's replicas\n", m.Shard)
			} else {
				fmt.Fprintf(e.stdout, "The shard's leader converges now: 'roost shards list' shows it, or pass --wait next time.\n")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "node to move the replica to (required)")
	f.StringVar(&from, "from", "", "replica to drop (default: the one the planner would drop)")
	f.BoolVar(&wait, "wait", false, "wait until the shard has converged, showing progress on stderr")
	o.register(cmd)
	return cmd
}

// waitMove polls the shard list until shard m.Shard has converged on the
// map m made: its voters are its replicas, which include m.To, and m.From
// is gone. It shows each new stage on stderr.
func waitMove(ctx context.Context, c *adminClient, stderr io.Writer, m apiMove) error {
	var (
		last      string // the stage shown last
		lastShown time.Time
		failing   time.Time // when the current streak of failed polls began
		lastErr   string
	)
	for first := true; ; first = false {
		if !first {
			if err := sleepCtx(ctx, adminPollInterval); err != nil {
				return fmt.Errorf("stopped waiting; shard %d goes on converging ('roost shards list' shows it)", m.Shard)
			}
		}
		shards, _, err := listShards(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("stopped waiting; shard %d goes on converging ('roost shards list' shows it)", m.Shard)
			}
			if retry, werr := retryPoll(stderr, err, &failing, &lastErr); retry {
				continue
			} else {
				return werr
			}
		}
		failing, lastErr = time.Time{}, ""
		i := slices.IndexFunc(shards, func(s apiShard) bool { return s.ID == m.Shard })
		if i < 0 {
			return fmt.Errorf("shard %d is not in the shard list any more", m.Shard)
		}
		stage, done, err := moveStage(shards[i], m)
		if err != nil || done {
			return err
		}
		if stage != last || time.Since(lastShown) >= adminProgressEvery {
			fmt.Fprintf(stderr, "shard %d: %s\n", m.Shard, stage)
			last, lastShown = stage, time.Now()
		}
	}
}

// moveStage says where shard s is in carrying out move m, whether it is
// done, and an error if the map no longer means to make the move.
func moveStage(s apiShard, m apiMove) (stage string, done bool, err error) {
	inRaft := func(id string) bool { return slices.Contains(s.Voters, id) || slices.Contains(s.NonVoters, id) }
	switch {
	case s.Version < m.Version:
		return fmt.Sprintf("waiting for shard version %d (this node has %d)", m.Version, s.Version), false, nil
	case !slices.Contains(s.Replicas, m.To):
		return "", false, fmt.Errorf("shard %d's placement changed again (shard version %d) and no longer has a replica on %s", s.ID, s.Version, m.To)
	case s.Leader == "":
		return "waiting for a leader", false, nil
	case slices.Contains(s.NonVoters, m.To):
		if lag, ok := s.ReplicaLag[m.To]; ok && lag < 0 {
			return fmt.Sprintf("%s is a non-voter that has not answered yet (its replica may still be starting; if this lasts, see 'roost members': is it down or unreachable?)", m.To), false, nil
		} else if ok {
			return fmt.Sprintf("%s is catching up as a non-voter, %d entries behind", m.To, lag), false, nil
		}
		return fmt.Sprintf("%s is catching up as a non-voter", m.To), false, nil
	case !slices.Contains(s.Voters, m.To):
		return fmt.Sprintf("waiting for leader %s to add %s", s.Leader, m.To), false, nil
	case m.From != "" && inRaft(m.From):
		return fmt.Sprintf("%s is a voter; removing %s", m.To, m.From), false, nil
	case len(s.NonVoters) > 0 || !sameSet(s.Voters, s.Replicas):
		return fmt.Sprintf("waiting for the voters (%s) to match the map (%s)", strings.Join(s.Voters, ","), strings.Join(s.Replicas, ",")), false, nil
	}
	return "", true, nil
}

func (e adminEnv) newTransferLeaderCommand() *cobra.Command {
	o := e.options()
	var to string
	cmd := &cobra.Command{
		Use:   "transfer-leader SHARD --to NODE",
		Short: "Make another replica the shard's leader",
		Long: `Make the replica of SHARD on node --to the shard's leader. The command returns
once the shard's leader has handed over. --to must hold a voting replica of
the shard.` + adminConnectHelp,
		Example: `  roost shards transfer-leader 7 --to n2`,
		Args:    exactArgs("SHARD"),
		RunE: func(cmd *cobra.Command, args []string) error {
			shard, err := parseShard(cmd, args[0])
			if err != nil {
				return err
			}
			if to == "" {
				return &usageError{cmd: cmd, err: errors.New("--to is required: the node whose replica should lead")}
			}
			if err := checkNodeID(cmd, "--to", to); err != nil {
				return err
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			var resp struct {
				Shard  int    `json:"shard"`
				Leader string `json:"leader"`
			}
			body := struct {
				To string `json:"to"`
			}{to}
			raw, err := c.call(cmd.Context(), http.MethodPost, fmt.Sprintf("/v1/shards/%d/transfer-leader", shard), body, &resp)
			if err != nil {
				return err
			}
			if o.json() {
				return writeJSON(e.stdout, raw)
			}
			if resp.Leader == "" {
				resp.Leader = to
			}
			fmt.Fprintf(e.stdout, "shard %d: leader is now %s\n", shard, resp.Leader)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "node whose replica becomes the leader (required)")
	o.register(cmd)
	return cmd
}

func (e adminEnv) newRebalanceCommand() *cobra.Command {
	o := e.options()
	var dryRun, wait bool
	var maxConcurrent int
	cmd := &cobra.Command{
		Use:   "rebalance [--dry-run] [--max-concurrent N]",
		Short: "Spread the shards' replicas evenly over the active nodes",
		Long: `Plan moves that spread the replicas evenly over the active nodes (for
instance after adding a node) and start them as one operation, at most
--max-concurrent moves at a time; the nodes spread the shards' leaderships
over them on their own. Only one rebalance, drain or heal runs at a time;
the cluster refuses a second and says which one is running.

--dry-run prints the moves the planner would make (SHARD, the node to ADD a
replica on, the one to REMOVE it from) and changes nothing.

Without --wait the command prints the operation it started and returns;
'roost operation' shows its progress. With --wait it shows progress on
stderr (moves done of the total, and the estimated time left) and
exits 0 once the operation is done, or 1 if it failed. Ctrl-C stops waiting, not the
operation; 'roost operation ID --wait', or this command with --wait again,
follows it again. If the meta leadership moves, the new meta leader carries
the operation on and --wait follows it; if the node at --addr stops
answering, --wait asks the cluster's other nodes.` + adminConnectHelp,
		Example: `  # what would move?
  roost rebalance --dry-run

  # move, two shards at a time, and wait for it
  roost rebalance --max-concurrent 2 --wait`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkMaxConcurrent(cmd, maxConcurrent); err != nil {
				return err
			}
			if dryRun && wait {
				return &usageError{cmd: cmd, err: errors.New("--dry-run starts nothing to --wait for")}
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			body := struct {
				DryRun        bool `json:"dry_run"`
				MaxConcurrent int  `json:"max_concurrent"`
			}{dryRun, maxConcurrent}
			if dryRun {
				var plan struct {
					Moves []apiPlannedMove `json:"moves"`
				}
				raw, err := c.call(cmd.Context(), http.MethodPost, "/v1/rebalance", body, &plan)
				if err != nil {
					return err
				}
				if o.json() {
					return writeJSON(e.stdout, raw)
				}
				writePlanTable(e.stdout, plan.Moves)
				return nil
			}
			return e.startOperation(cmd, c, o, "/v1/rebalance", body, wait, "rebalance", "")
		},
	}
	f := cmd.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "print the planned moves without making them")
	decimalIntVar(f, &maxConcurrent, "max-concurrent", 4, "most moves in progress at once (1 to 64)")
	f.BoolVar(&wait, "wait", false, "wait until the rebalance is done, showing progress on stderr")
	o.register(cmd)
	return cmd
}

func writePlanTable(w io.Writer, moves []apiPlannedMove) {
	if len(moves) == 0 {
		fmt.Fprintln(w, "Nothing to move: every replica is where the planner places it (consistent hashing with bounded loads: a node may hold up to about 1.25 times the mean).")
		return
	}
	moves = slices.Clone(moves)
	sort.SliceStable(moves, func(i, j int) bool {
		a, b := moves[i], moves[j]
		if a.Shard != b.Shard {
			return a.Shard < b.Shard
		}
		if a.Add.String() != b.Add.String() {
			return a.Add.String() < b.Add.String()
		}
		return a.Remove.String() < b.Remove.String()
	})
	tw := newTable(w)
	fmt.Fprintln(tw, "SHARD\tADD\tREMOVE")
	for _, m := range moves {
		fmt.Fprintf(tw, "%d\t%s\t%s\n", m.Shard, cell(m.Add.String()), cell(m.Remove.String()))
	}
	tw.Flush()
}

func (e adminEnv) newDrainCommand() *cobra.Command {
	o := e.options()
	var wait bool
	var maxConcurrent int
	cmd := &cobra.Command{
		Use:   "drain NODE",
		Short: "Move every replica off a node before it is removed",
		Long: `Mark NODE draining, so that nothing new is placed on it, and move its replicas
to the other active nodes that are alive, at most --max-concurrent at a time.
The cluster refuses a drain only when no other active node can take the
replicas; with fewer active nodes left than --replicas, shards keep fewer
replicas. A replica whose only other place is an active node that is down
stays on NODE, and a shard with too few replicas alive to change (two of three
nodes down) is left as it is: the drain fails naming them once the rest is
moved, to be run again when those nodes are back. One rebalance, drain or heal
runs at a time. Once a node holds nothing, 'roost remove NODE' takes it out of
the cluster.

Without --wait the command prints the operation it started and returns;
'roost operation' shows its progress. With --wait it shows progress on
stderr (moves done of the total, and the estimated time left) and exits 0
once the node is drained, or 1 if the drain failed. Ctrl-C stops waiting,
not the drain; 'roost operation ID --wait', or this command with --wait
again, follows it again. If the meta leadership moves, the new meta leader
carries the drain on and --wait follows it; if the node at --addr stops
answering, --wait asks the cluster's other nodes.` + adminConnectHelp,
		Example: `  # empty n3, then take it out of the cluster
  roost drain n3 --wait && roost remove n3`,
		Args: exactArgs("NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkNodeID(cmd, "NODE", args[0]); err != nil {
				return err
			}
			if err := checkMaxConcurrent(cmd, maxConcurrent); err != nil {
				return err
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			body := struct {
				MaxConcurrent int `json:"max_concurrent"`
			}{maxConcurrent}
			return e.startOperation(cmd, c, o, "/v1/nodes/"+pathSegment(args[0])+"/drain", body, wait, "drain", args[0])
		},
	}
	f := cmd.Flags()
	decimalIntVar(f, &maxConcurrent, "max-concurrent", 4, "most moves in progress at once (1 to 64)")
	f.BoolVar(&wait, "wait", false, "wait until the node is drained, showing progress on stderr")
	o.register(cmd)
	return cmd
}

func (e adminEnv) newRemoveCommand() *cobra.Command {
	o := e.options()
	cmd := &cobra.Command{
		Use:   "remove NODE",
		Short: "Take a drained node out of the cluster",
		Long: `Take NODE out of the cluster map for good; its id is not used again. The
cluster refuses while the node still holds replicas: drain it first. Stop the
node's process afterwards.` + adminConnectHelp,
		Example: `  roost drain n3 --wait && roost remove n3`,
		Args:    exactArgs("NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.setNodeState(cmd, o, args[0], "remove")
		},
	}
	o.register(cmd)
	return cmd
}

func (e adminEnv) newActivateCommand() *cobra.Command {
	o := e.options()
	cmd := &cobra.Command{
		Use:   "activate NODE",
		Short: "Make a draining node active again",
		Long: `Make NODE, marked draining by 'roost drain', active again: new replicas may be
placed on it, and 'roost rebalance' moves some back to it. The cluster refuses
while the drain of NODE is still running (wait for it to end, or for its
failure) and for a removed node. An active node is left as it is.` + adminConnectHelp,
		Example: `  # a drain started by mistake, or a node back from maintenance
  roost activate n3 && roost rebalance --wait`,
		Args: exactArgs("NODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.setNodeState(cmd, o, args[0], "activate")
		},
	}
	o.register(cmd)
	return cmd
}

// setNodeState posts to /v1/nodes/{id}/{call} (remove, activate), which
// answers {"id","state"}, and prints the node's state.
func (e adminEnv) setNodeState(cmd *cobra.Command, o *adminOptions, id, call string) error {
	if err := checkNodeID(cmd, "NODE", id); err != nil {
		return err
	}
	c, err := o.client(cmd)
	if err != nil {
		return err
	}
	var resp struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	raw, err := c.call(cmd.Context(), http.MethodPost, "/v1/nodes/"+pathSegment(id)+"/"+call, nil, &resp)
	if err != nil {
		return err
	}
	if o.json() {
		return writeJSON(e.stdout, raw)
	}
	fmt.Fprintf(e.stdout, "node %s: %s\n", cmp.Or(resp.ID, id), cell(resp.State))
	return nil
}

// startOperation posts body to path, which starts a rebalance or drain
// (kind, of node for a drain) and answers 202 {"operation": …}, then prints
// it, or with wait follows it to the end. With wait, the same operation
// already running (a --wait interrupted and run again) is followed instead
// of refused.
func (e adminEnv) startOperation(cmd *cobra.Command, c *adminClient, o *adminOptions, path string, body any, wait bool, kind, node string) error {
	op, raw, err := postOperation(cmd.Context(), c, path, body)
	if err != nil && wait {
		if cur, curRaw, ok := sameOperationRunning(cmd.Context(), c, err, kind, node); ok {
			fmt.Fprintf(e.stderr, "roost: %s is already running; following it\n", cur.name())
			op, raw, err = cur, curRaw, nil
		} else if ae := (*apiError)(nil); errors.As(err, &ae) && ae.operation != "" {
			// The meta leadership moved while the operation was
			// recorded: it may run all the same. Follow it; if the new
			// meta leader does not know it, it is started again.
			fmt.Fprintf(e.stderr, "roost: %s; following it\n", ae.msg)
			op, raw, err = maybeStarted(ae.operation, kind, node), nil, nil
		}
	}
	if err != nil {
		return err
	}
	if !wait {
		if o.json() {
			return writeJSON(e.stdout, raw)
		}
		fmt.Fprintf(e.stdout, "Started %s: %s.\n", op.name(), op.progress())
		fmt.Fprintf(e.stdout, "It runs in the cluster: 'roost operation %s --wait' follows it.\n", op.ID)
		return nil
	}
	return e.followOperation(cmd, c, o, op, raw, func(ctx context.Context) (apiOperation, json.RawMessage, error) {
		return postOperation(ctx, c, path, body)
	})
}

// maybeStarted is the operation id of kind (and node), which a refused
// call may have started, as --wait follows it until it learns more.
func maybeStarted(id, kind, node string) apiOperation {
	b, _ := json.Marshal(map[string]string{"id": id, "kind": kind, "node": node, "state": "running"})
	var op apiOperation
	_ = json.Unmarshal(b, &op) // op's fields take any JSON
	return op
}

// sameOperationRunning reports, for err refusing a new operation, whether
// the one running is of kind (and node) too, and returns it if so.
func sameOperationRunning(ctx context.Context, c *adminClient, err error, kind, node string) (apiOperation, json.RawMessage, bool) {
	var ae *apiError
	if !errors.As(err, &ae) || ae.status != http.StatusConflict {
		return apiOperation{}, nil, false
	}
	cur, rerr := runningOperation(ctx, c)
	if rerr != nil || cur == nil || cur.Kind != kind || cur.Node != node {
		return apiOperation{}, nil, false
	}
	op, raw, gerr := getOperation(ctx, c, cur.ID.String())
	return op, raw, gerr == nil && !op.finished()
}

// runningOperation is the operation the cluster is running (nil if none),
// from GET /v1/status, which asks the meta leader.
func runningOperation(ctx context.Context, c *adminClient) (*apiOperation, error) {
	var st apiStatus
	if _, err := c.call(ctx, http.MethodGet, "/v1/status", nil, &st); err != nil {
		return nil, err
	}
	return st.Operation, nil
}

// followOperation waits for op to end, showing progress on stderr, and
// reports how it ended (exit 1 if it failed). If the operation ends with
// the meta leadership and the new meta leader has no record of it, it is
// started again with restart, if not nil.
func (e adminEnv) followOperation(cmd *cobra.Command, c *adminClient, o *adminOptions, op apiOperation, raw json.RawMessage,
	restart func(context.Context) (apiOperation, json.RawMessage, error)) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The node asked may die (or be stopped) while the operation goes on
	// elsewhere: know the others to ask them then.
	c.learnOthers(ctx)
	var err error
	for restarts := 0; ; restarts++ {
		op, raw, err = waitOperation(ctx, c, e.stderr, op, raw)
		lost := lostWithMetaLeader(op, err)
		if lost == "" || restarts == maxOperationRestarts || ctx.Err() != nil {
			break
		}
		name := op.name()
		if !sleepUntilRestart(ctx) {
			break
		}
		// The meta group records a rebalance or drain, and a new meta
		// leader carries it on under the same ID: follow it there.
		if cur, curRaw, gerr := getOperation(ctx, c, op.ID.String()); gerr == nil && lostWithMetaLeader(cur, nil) == "" {
			fmt.Fprintf(e.stderr, "roost: %s ended with the meta leadership (%s); the new meta leader carries it on\n", name, lost)
			op, raw, err = cur, curRaw, nil
			continue
		}
		if restart == nil {
			break
		}
		// Otherwise (a node that does not record operations) start it
		// again: operations plan from the map each step, so the new one
		// picks up where the lost one stopped.
		fmt.Fprintf(e.stderr, "roost: %s ended with the meta leadership (%s); starting it again on the new meta leader\n", name, lost)
		if op, raw, err = restart(ctx); err != nil {
			return fmt.Errorf("starting %s again after a meta leader change: %w", name, err)
		}
	}
	if err != nil {
		return err
	}
	if o.json() {
		if err := writeJSON(e.stdout, raw); err != nil {
			return err
		}
	}
	if op.State == opFailed {
		msg := op.Error
		if msg == "" {
			msg = "no reason given"
		}
		return fmt.Errorf("%s failed after %s: %s", op.name(), op.progress(), msg)
	}
	if !o.json() {
		fmt.Fprintf(e.stdout, "%s done: %s.\n", capitalize(op.name()), op.progress())
	}
	return nil
}

// maxRecentShown bounds the ended operations 'roost operation' lists.
const maxRecentShown = 5

func (e adminEnv) newOperationCommand() *cobra.Command {
	o := e.options()
	var wait bool
	cmd := &cobra.Command{
		Use:   "operation [ID]",
		Short: "Show a rebalance, drain or heal, or wait for it to end",
		Long: `Show operation ID (a rebalance, drain or heal), or without ID the one the
cluster is running now (or, if none is, the last few that ended): its state,
the moves done of the total, the estimated time left, and the error it
failed with. With -o json and no ID, when none is running, it prints
{"operation": null, "recent": [...]}, the recent ones as GET /v1/operations
gives them.

--wait follows it until it ends, showing progress on stderr as the --wait of
rebalance and drain does, and exits 0 once it is done, or 1 if it failed; if
the node at --addr stops answering, it asks the cluster's other nodes.
Ctrl-C stops waiting, not the operation. The meta leader keeps the last
operations it ran; after a meta leader change only the last one that ended
is known.` + adminConnectHelp,
		Example: `  # what is running now
  roost operation

  # wait again for a drain whose --wait was interrupted
  roost operation drain-20261204t081500-n2-3 --wait`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return &usageError{cmd: cmd, err: fmt.Errorf("one ID expected, got %d arguments: %s", len(args), strings.Join(args, " "))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			var id string
			if len(args) == 1 {
				id = args[0]
				if err := checkOperationID(cmd, id); err != nil {
					return err
				}
			} else {
				cur, err := runningOperation(cmd.Context(), c)
				if err != nil {
					return err
				}
				if cur == nil {
					// The recent ones say how the last ended; a node
					// without the list (an older one) answers 404 for it.
					// Any other failure, roost dev's 409 included, is said.
					var list struct {
						Operations []json.RawMessage `json:"operations"`
					}
					if _, err := c.call(cmd.Context(), http.MethodGet, "/v1/operations", nil, &list); err != nil {
						if ae := (*apiError)(nil); !errors.As(err, &ae) || ae.status != http.StatusNotFound {
							return err
						}
					}
					recent := list.Operations[:min(len(list.Operations), maxRecentShown)]
					if o.json() {
						raw, err := json.Marshal(map[string]any{"operation": nil, "recent": append([]json.RawMessage{}, recent...)})
						if err != nil {
							return err
						}
						return writeJSON(e.stdout, raw)
					}
					fmt.Fprintln(e.stdout, "No rebalance, drain or heal is running.")
					if len(recent) > 0 {
						fmt.Fprintln(e.stdout, "Recent ones, newest first:")
					}
					for _, raw := range recent {
						var op apiOperation
						if err := json.Unmarshal(raw, &op); err != nil {
							return fmt.Errorf("GET /v1/operations: %w", err)
						}
						fmt.Fprintln(e.stdout, "  "+describeOperation(op))
					}
					return nil
				}
				id = cur.ID.String()
			}
			op, raw, err := getOperation(cmd.Context(), c, id)
			if err != nil {
				return err
			}
			if wait {
				return e.followOperation(cmd, c, o, op, raw, nil)
			}
			if o.json() {
				return writeJSON(e.stdout, raw)
			}
			fmt.Fprintln(e.stdout, describeOperation(op))
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the operation ends, showing progress on stderr")
	o.register(cmd)
	return cmd
}

// maxOperationRestarts bounds how often a --wait starts an operation again
// after meta leader changes.
const maxOperationRestarts = 5

// sleepUntilRestart gives a new meta leader a moment to be elected.
func sleepUntilRestart(ctx context.Context) bool { return sleepCtx(ctx, operationRestartDelay) == nil }

// postOperation starts an operation with POST path body.
func postOperation(ctx context.Context, c *adminClient, path string, body any) (apiOperation, json.RawMessage, error) {
	var resp struct {
		Operation *apiOperation `json:"operation"`
	}
	raw, err := c.call(ctx, http.MethodPost, path, body, &resp)
	if err != nil {
		return apiOperation{}, nil, err
	}
	if resp.Operation == nil {
		return apiOperation{}, nil, fmt.Errorf("POST %s%s answered without an operation", c.base, path)
	}
	op := *resp.Operation
	if op.ID.String() == "" && !op.finished() {
		return op, raw, fmt.Errorf("POST %s%s answered an operation without an id, which --wait and 'roost status' need", c.base, path)
	}
	return op, raw, nil
}

// lostWithMetaLeader says why, if the operation ended because its meta
// leader lost the leadership: it failed saying so, or the new meta leader
// has no record of it. "" means it did not.
func lostWithMetaLeader(op apiOperation, err error) string {
	var ae *apiError
	switch {
	case err != nil && errors.As(err, &ae) && ae.status == http.StatusBadRequest && strings.Contains(ae.msg, "unknown operation"):
		return "the new meta leader has no record of it"
	case err == nil && op.State == opFailed && strings.Contains(op.Error, "lost the meta leadership"):
		return op.Error
	}
	return ""
}

// waitOperation polls GET /v1/operations/{id} until op has finished,
// showing its progress on stderr, and returns its last state and the
// answer that gave it (raw is the answer op came in).
func waitOperation(ctx context.Context, c *adminClient, stderr io.Writer, op apiOperation, raw json.RawMessage) (apiOperation, json.RawMessage, error) {
	p := progressLine{w: stderr}
	var (
		failing time.Time
		lastErr string
	)
	for {
		p.show(op)
		if op.finished() {
			return op, raw, nil
		}
		stopped := func() (apiOperation, json.RawMessage, error) {
			return op, raw, fmt.Errorf("stopped waiting; %s goes on in the cluster at %s ('roost operation %s --wait' follows it again)", op.name(), op.progress(), op.ID)
		}
		if sleepCtx(ctx, adminPollInterval) != nil {
			return stopped()
		}
		cur, r, err := getOperation(ctx, c, op.ID.String())
		if err != nil {
			if ctx.Err() != nil {
				return stopped()
			}
			if retry, werr := retryPoll(stderr, err, &failing, &lastErr); retry {
				c.failover(stderr, err)
				continue
			} else {
				return op, raw, werr
			}
		}
		failing, lastErr = time.Time{}, ""
		op, raw = cur, r
	}
}

// getOperation asks for operation id with GET /v1/operations/{id}.
func getOperation(ctx context.Context, c *adminClient, id string) (apiOperation, json.RawMessage, error) {
	path := "/v1/operations/" + pathSegment(id)
	var resp struct {
		Operation *apiOperation `json:"operation"`
	}
	raw, err := c.call(ctx, http.MethodGet, path, nil, &resp)
	if err == nil && resp.Operation == nil {
		err = fmt.Errorf("GET %s%s answered without an operation", c.base, path)
	}
	if err != nil {
		return apiOperation{}, nil, err
	}
	return *resp.Operation, raw, nil
}

// retryPoll decides what a --wait does about a failed poll: it retries
// failures that may pass for up to adminRetryFor from the first in a row
// (*failing), saying so on stderr once per distinct error (*last), and
// returns the error to give up with otherwise.
func retryPoll(stderr io.Writer, err error, failing *time.Time, last *string) (retry bool, _ error) {
	if !transient(err) {
		return false, err
	}
	if failing.IsZero() {
		*failing = time.Now()
	}
	if time.Since(*failing) > adminRetryFor {
		return false, fmt.Errorf("%v (gave up after %s of retrying)", err, adminRetryFor)
	}
	if msg := err.Error(); msg != *last {
		fmt.Fprintf(stderr, "roost: %s; retrying\n", msg)
		*last = msg
	}
	return true, nil
}

// progressLine shows an operation's progress on stderr: a line when the
// progress changes, and again every adminProgressEvery while it does not.
type progressLine struct {
	w     io.Writer
	last  string
	shown time.Time
	// Where the operation was when first seen, for an estimate of the time
	// left when the server gives none.
	t0    time.Time
	done0 int
}

func (p *progressLine) show(op apiOperation) {
	now := time.Now()
	if p.t0.IsZero() {
		p.t0, p.done0 = now, op.Done
	}
	line := fmt.Sprintf("%s: %s", op.name(), op.progress())
	if op.State != opRunning {
		line += ", " + op.State
	} else if op.Total > op.Done {
		if eta, ok := op.serverETA(); ok {
			line += ", ETA " + formatETA(eta)
		} else if moved := op.Done - p.done0; moved > 0 {
			perMove := now.Sub(p.t0) / time.Duration(moved)
			line += ", ETA " + formatETA(perMove*time.Duration(op.Total-op.Done)) + " (estimated here)"
		} else {
			line += ", ETA unknown yet"
		}
	}
	line += op.stall()
	if line == p.last && now.Sub(p.shown) < adminProgressEvery {
		return
	}
	fmt.Fprintln(p.w, line)
	p.last, p.shown = line, now
}

// maxMaxConcurrent is the most moves at once the admin API takes
// (max_concurrent, docs/admin-api.md).
const maxMaxConcurrent = 64

// checkMaxConcurrent vets --max-concurrent against the API's bounds, so
// that a value the cluster would refuse is a usage error, not a request.
func checkMaxConcurrent(cmd *cobra.Command, n int) error {
	if n < 1 {
		return &usageError{cmd: cmd, err: fmt.Errorf("--max-concurrent must be at least 1, got %d", n)}
	}
	if n > maxMaxConcurrent {
		return &usageError{cmd: cmd, err: fmt.Errorf("--max-concurrent must be from 1 to %d, got %d", maxMaxConcurrent, n)}
	}
	return nil
}

// exactArgs requires one argument, named what in messages.
func exactArgs(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return &usageError{cmd: cmd, err: fmt.Errorf("missing %s", what)}
		case len(args) > 1:
			return &usageError{cmd: cmd, err: fmt.Errorf("one %s expected, got %d arguments: %s", what, len(args), strings.Join(args, " "))}
		}
		return nil
	}
}

// parseShard reads a SHARD argument: a shard number, as 'roost shards
// list' shows them.
func parseShard(cmd *cobra.Command, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, &usageError{cmd: cmd, err: fmt.Errorf("SHARD must be a shard number such as 7 (see 'roost shards list'), got %q", s)}
	}
	return n, nil
}

// checkNodeID vets a node id the way nodes are told to choose them, so a
// typo is a usage error rather than a request.
func checkNodeID(cmd *cobra.Command, what, id string) error {
	ok := len(id) >= 1 && len(id) <= 64
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			ok = false
		}
	}
	if !ok {
		return &usageError{cmd: cmd, err: fmt.Errorf("%s must be a node id (1 to 64 of a-z, 0-9, '-', '_' and '.', as 'roost members' shows), got %q", what, id)}
	}
	return nil
}

// checkOperationID refuses, as a usage error, what cannot be an
// operation's id (1 to 128 printable ASCII characters, no space or '/',
// as the cluster makes them), before any call.
func checkOperationID(cmd *cobra.Command, id string) error {
	ok := len(id) >= 1 && len(id) <= 128
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == '/' {
			ok = false
		}
	}
	if !ok {
		return &usageError{cmd: cmd, err: fmt.Errorf("ID must be an operation id as 'roost operation' shows it (such as drain-20261204t081500-n2-3), got %q", id)}
	}
	return nil
}

// sleepCtx sleeps for d, or less if ctx ends, which it reports.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// newTable is the tabwriter every table uses.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// cell is s, or "-" for nothing, so that columns stay aligned and parseable.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// userCell is cell for text a user of the app chose (a KV key, its
// metadata): quoted, with escapes, if it holds anything but printable
// characters, so a key cannot move the columns (a tab, a newline) or
// drive the operator's terminal (escape sequences).
func userCell(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return cell(s)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
