// Linux event-notification headers that Swift's Glibc module does not export.
// This target exists only to make them visible; it contains no logic.
#ifndef CTRANSPORT_H
#define CTRANSPORT_H
#ifndef __linux__
#error "moe-metricsd supports Linux only: its transport is built on epoll(7), eventfd(2) and timerfd_create(2)"
#endif
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <netinet/tcp.h>

// accept4(2) is declared by <sys/socket.h> only under _GNU_SOURCE, which the Glibc module is
// built without; this is the same prototype.
extern int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags);
#endif
