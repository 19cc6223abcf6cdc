#!/bin/sh
# Shorten ninja's output to a progress line every 100 steps, plus anything
# that is not a step line (warnings, errors), so a long build is not silent
# and the log stays readable.
awk '
/^\[[0-9]+\/[0-9]+\] / {
    s = $1; gsub(/[][]/, "", s); split(s, a, "/")
    if (a[1] % 100 == 0 || a[1] == a[2]) { print "  build " a[1] "/" a[2]; fflush() }
    next
}
{ print; fflush() }
'
