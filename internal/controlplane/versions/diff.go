package versions

import (
	"fmt"
	"strings"
)

// maxEdits bounds the diff's work (Myers' algorithm is O((N+M)·D) in time
// and O(D²) in memory): two documents further apart than this are shown
// as one hunk replacing every line.
const maxEdits = 4000

// Unified returns a unified diff (3 lines of context) from document a,
// named aName, to b; "" when they are equal.
func Unified(aName string, a []byte, bName string, b []byte) string {
	la, lb := lines(a), lines(b)
	ops := editScript(la, lb)
	if ops == nil {
		return ""
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", aName, bName)
	const ctx = 3
	for i := 0; i < len(ops); {
		// Find the next change, then extend the hunk while the changes are
		// within 2*ctx lines of each other.
		for i < len(ops) && ops[i].kind == ' ' {
			i++
		}
		if i == len(ops) {
			break
		}
		start := max(i-ctx, 0)
		end := i
		for j := i; j < len(ops); j++ {
			if ops[j].kind != ' ' {
				end = j
			} else if j-end > 2*ctx {
				break
			}
		}
		stop := min(end+ctx+1, len(ops))
		aStart, bStart := ops[start].a, ops[start].b
		var na, nb int
		for _, o := range ops[start:stop] {
			if o.kind != '+' {
				na++
			}
			if o.kind != '-' {
				nb++
			}
		}
		fmt.Fprintf(&sb, "@@ -%s +%s @@\n", hunkRange(aStart, na), hunkRange(bStart, nb))
		for _, o := range ops[start:stop] {
			sb.WriteByte(o.kind)
			sb.WriteString(o.text)
			sb.WriteByte('\n')
		}
		i = stop
	}
	return sb.String()
}

func hunkRange(start, n int) string {
	if n == 0 {
		return fmt.Sprintf("%d,0", start)
	}
	if n == 1 {
		return fmt.Sprintf("%d", start+1)
	}
	return fmt.Sprintf("%d,%d", start+1, n)
}

func lines(b []byte) []string {
	s := strings.TrimSuffix(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// op is one line of the edit script: ' ' kept, '-' removed from a, '+'
// added from b; a and b are the line indexes (0-based) in each document
// before the line.
type op struct {
	kind byte
	text string
	a, b int
}

// editScript is the shortest edit script from a to b (Myers), nil when
// they are equal.
func editScript(a, b []string) []op {
	n, m := len(a), len(b)
	if n == m {
		eq := true
		for i := range a {
			if a[i] != b[i] {
				eq = false
				break
			}
		}
		if eq {
			return nil
		}
	}
	limit := min(n+m, maxEdits)
	off := limit + 1
	v := make([]int, 2*limit+3)
	var trace [][]int
	found := -1
	for d := 0; d <= limit && found < 0; d++ {
		trace = append(trace, append([]int(nil), v...))
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[off+k-1] < v[off+k+1]) {
				x = v[off+k+1]
			} else {
				x = v[off+k-1] + 1
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x, y = x+1, y+1
			}
			v[off+k] = x
			if x >= n && y >= m {
				found = d
				break
			}
		}
	}
	if found < 0 {
		// Too far apart: replace everything.
		ops := make([]op, 0, n+m)
		for i, l := range a {
			ops = append(ops, op{kind: '-', text: l, a: i, b: 0})
		}
		for j, l := range b {
			ops = append(ops, op{kind: '+', text: l, a: n, b: j})
		}
		return ops
	}
	// Walk the trace back from (n, m).
	var rev []op
	x, y := n, m
	for d := found; d > 0; d-- {
		vp := trace[d]
		k := x - y
		var pk int
		if k == -d || (k != d && vp[off+k-1] < vp[off+k+1]) {
			pk = k + 1
		} else {
			pk = k - 1
		}
		px := vp[off+pk]
		py := px - pk
		for x > px && y > py {
			x, y = x-1, y-1
			rev = append(rev, op{kind: ' ', text: a[x], a: x, b: y})
		}
		if x == px {
			y--
			rev = append(rev, op{kind: '+', text: b[y], a: x, b: y})
		} else {
			x--
			rev = append(rev, op{kind: '-', text: a[x], a: x, b: y})
		}
	}
	for x > 0 && y > 0 {
		x, y = x-1, y-1
		rev = append(rev, op{kind: ' ', text: a[x], a: x, b: y})
	}
	ops := make([]op, len(rev))
	for i, o := range rev {
		ops[len(rev)-1-i] = o
	}
	return ops
}
