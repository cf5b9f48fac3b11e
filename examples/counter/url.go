package counter

import (
	"strings"
	"unicode/utf8"
)

// The seed reads its request's URL as a Worker does, by the WHATWG URL
// Standard: url.searchParams.get("name") and url.pathname. Go's
// url.ParseQuery differs on inputs a client may well send (it drops a pair
// holding a ';' or a '%' that starts no escape, and keeps bytes that are not
// UTF-8), and a Go request's path keeps its dot segments, which a URL's
// pathname has removed. searchParam and pathname follow the standard.

// searchParam returns the value of the first pair called name in rawQuery,
// parsed as application/x-www-form-urlencoded (URLSearchParams.get), and
// whether there is one.
func searchParam(rawQuery, name string) (string, bool) {
	for _, pair := range strings.Split(rawQuery, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if formDecode(k) == name {
			return formDecode(v), true
		}
	}
	return "", false
}

// formDecode is the urlencoded parser's decoding of a name or value: '+'
// is a space, a '%' and two hex digits are that byte (any other '%' is
// kept), and the bytes are decoded as UTF-8 with replacement.
func formDecode(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return decodeUTF8(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// decodeUTF8 is the Encoding Standard's UTF-8 decode: every maximal
// subpart of an ill-formed sequence becomes one U+FFFD, as in TextDecoder.
func decodeUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var out strings.Builder
	needed, seen := 0, 0
	lower, upper := byte(0x80), byte(0xBF)
	var cp rune
	for i := 0; i < len(b); i++ {
		c := b[i]
		if needed == 0 {
			switch {
			case c <= 0x7F:
				out.WriteByte(c)
			case 0xC2 <= c && c <= 0xDF:
				needed, cp = 1, rune(c&0x1F)
			case 0xE0 <= c && c <= 0xEF:
				if c == 0xE0 {
					lower = 0xA0
				} else if c == 0xED {
					upper = 0x9F
				}
				needed, cp = 2, rune(c&0x0F)
			case 0xF0 <= c && c <= 0xF4:
				if c == 0xF0 {
					lower = 0x90
				} else if c == 0xF4 {
					upper = 0x8F
				}
				needed, cp = 3, rune(c&0x07)
			default:
				out.WriteRune(utf8.RuneError)
			}
			continue
		}
		if c < lower || c > upper {
			// The sequence ends before c, which is read again.
			needed, seen, cp = 0, 0, 0
			lower, upper = 0x80, 0xBF
			out.WriteRune(utf8.RuneError)
			i--
			continue
		}
		lower, upper = 0x80, 0xBF
		cp = cp<<6 | rune(c&0x3F)
		if seen++; seen == needed {
			out.WriteRune(cp)
			needed, seen, cp = 0, 0, 0
		}
	}
	if needed != 0 {
		out.WriteRune(utf8.RuneError)
	}
	return out.String()
}

// pathname returns a request's escaped path as a URL's pathname: its "."
// and ".." segments (also written "%2e") removed as the URL parser does,
// its escapes and empty segments kept.
func pathname(escapedPath string) string {
	segs := strings.Split(strings.TrimPrefix(escapedPath, "/"), "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch strings.ToLower(s) {
		case "..", ".%2e", "%2e.", "%2e%2e":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		case ".", "%2e":
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}
