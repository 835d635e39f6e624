// Linux event-notification headers that Swift's Glibc module does not export.
// This target exists only to make them visible; it contains no logic.
#ifndef CTRANSPORT_H
#define CTRANSPORT_H
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <netinet/tcp.h>
#endif
