// The system's libnghttp2 headers (Debian: libnghttp2-dev). Not vendored: we build
// against whatever the distribution ships, which on Debian 12 is 1.52.
#include <nghttp2/nghttp2.h>
