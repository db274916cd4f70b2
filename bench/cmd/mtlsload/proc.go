package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// groupCPU returns a function summing user and system CPU time (all
// threads) over the live processes of process group pgid, from
// /proc/PID/stat (Linux), in clock ticks of clkTck per second. A process
// group, not a pid, because nginx's worker is a child of its master.
func groupCPU(pgid, clkTck int) func() (time.Duration, error) {
	return func() (time.Duration, error) {
		stats, err := filepath.Glob("/proc/[0-9]*/stat")
		if err != nil {
			return 0, err
		}
		var ticks int64
		found := false
		for _, path := range stats {
			data, err := os.ReadFile(path)
			if err != nil {
				continue // exited meanwhile
			}
			pg, t, err := parseStat(string(data))
			if err != nil {
				return 0, fmt.Errorf("%s: %w", path, err)
			}
			if pg == pgid {
				ticks += t
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("no process in group %d", pgid)
		}
		return time.Duration(ticks) * time.Second / time.Duration(clkTck), nil
	}
}

// parseStat returns the process group and utime+stime of a /proc/PID/stat
// line. The command name may hold spaces and parentheses, so fields are
// counted from its last ')'.
func parseStat(line string) (pgrp int, ticks int64, err error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, 0, errors.New("no command name")
	}
	f := strings.Fields(line[i+1:])
	// After the name: state ppid pgrp session tty_nr tpgid flags minflt
	// cminflt majflt cmajflt utime stime.
	if len(f) < 13 {
		return 0, 0, errors.New("too few fields")
	}
	if pgrp, err = strconv.Atoi(f[2]); err != nil {
		return 0, 0, err
	}
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, 0, err
		}
		ticks += n
	}
	return pgrp, ticks, nil
}
