// The system's zlib headers (Debian: zlib1g-dev). Used for gzip content coding of /metrics
// (RFC 9110 section 8.4.1.3) and, in tests, to inflate what the daemon sent.
#include <zlib.h>
