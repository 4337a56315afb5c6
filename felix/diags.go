package felix

import (
	"bytes"
	"strings"
)

// OwnIPTables keeps, of iptables-save output, what is tabby's: per table that has any,
// its header, the declarations of tabby's chains (ChainPrefix), their rules, the rules of
// other chains that jump to them (the hooks) and COMMIT, so the result stays
// iptables-restore syntax. Tables with nothing of tabby's are left out.
func OwnIPTables(save []byte) []byte {
	var out, table bytes.Buffer
	ours := false
	for line := range strings.Lines(string(save)) {
		l := strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(l, "*"):
			table.Reset()
			table.WriteString(l + "\n")
			ours = false
		case l == "COMMIT":
			if ours {
				out.Write(table.Bytes())
				out.WriteString("COMMIT\n")
			}
			table.Reset()
		case strings.HasPrefix(l, ":"+ChainPrefix):
			table.WriteString(l + "\n")
			ours = true
		case strings.HasPrefix(l, "-A "):
			chain, rest, _ := strings.Cut(l[3:], " ")
			if strings.HasPrefix(chain, ChainPrefix) || strings.HasPrefix(jumpTarget(rest), ChainPrefix) {
				table.WriteString(l + "\n")
				ours = true
			}
		}
	}
	return out.Bytes()
}

// OwnIPSets keeps, of `ipset save` output, the lines of tabby's sets (IPSetPrefix).
func OwnIPSets(save []byte) []byte {
	var out bytes.Buffer
	for line := range strings.Lines(string(save)) {
		if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(f[1], IPSetPrefix) {
			out.WriteString(line)
		}
	}
	return out.Bytes()
}
