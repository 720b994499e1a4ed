//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package progress

import "io"

func isTerminal(io.Writer) bool { return false }
