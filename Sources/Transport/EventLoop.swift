import CTransport
import SessionCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One connection, owned by exactly one event loop (no locks: only that thread touches it, as
/// the loop's entry points check in debug builds).
final class Connection {
    let fd: Int32
    let session: (any ConnectionSession)?
    /// Bytes produced but not yet accepted by the kernel, from `outputOffset` on.
    /// `@exclusivity(unchecked)`: a connection lives on one loop thread (checked in debug builds
    /// by `EventLoop.assertInLoop`) and `output` is lent (inout) only to its own session's calls,
    /// so the runtime's dynamic access check on every read guards nothing the static checks do not.
    @exclusivity(unchecked) var output: [UInt8] = []
    var outputOffset = 0
    /// The socket may hold unread bytes (edge-triggered: we saw an edge and have not drained it).
    var readable = false
    /// The peer announced it closed its side (EPOLLRDHUP): read until EOF, not just one short read.
    var peerHalfClosed = false
    /// Write what is pending, then close.
    var closing = false
    /// Our side is shut down and we are discarding input until EOF or `deadline`.
    var lingering = false
    /// Set while `readLoop` runs for this connection, so it is never entered twice.
    var reading = false
    /// In the loop's `ready` list: its turn ended with work left (unread input, or requests the
    /// session holds back), to be resumed on the loop's next pass.
    var queued = false
    var deadline: UInt64?

    init(fd: Int32, session: (any ConnectionSession)?) {
        self.fd = fd
        self.session = session
    }

    var hasPendingOutput: Bool { outputOffset < output.count }
}

/// Shared between the server handle and its loops; everything in it is thread-safe.
final class TransportShared: Sendable {
    let openConnections = Atomic<Int>(0)
    let maxConnections: Atomic<Int>
    let rejection: [UInt8]
    let lingerNanoseconds: UInt64
    let nextLoop = Atomic<Int>(0)
    /// Set by `TCPServer.shutdown` before it shuts the listening sockets down, so that a loop
    /// reads accept(2) failing with EINVAL (listener shut down) or EBADF as the end of
    /// accepting rather than as a failure to log and retry.
    let stopping = Atomic<Bool>(false)

    init(maxConnections: Int, rejection: [UInt8], lingerSeconds: Double) {
        self.maxConnections = Atomic(maxConnections)
        self.rejection = rejection
        self.lingerNanoseconds = timeoutNanoseconds(lingerSeconds)
    }
}

/// One thread with its own epoll instance, an eventfd to wake it, and the connections it owns.
///
/// Why epoll rather than a Dispatch read source per connection: each ready socket costs one
/// `epoll_wait` slot instead of a queue hop and a block invocation (`scripts/bench` compares the
/// server with nginx on the same requests). Sockets are registered once, edge-triggered for
/// reading and writing, so back-pressure needs no `epoll_ctl` calls: when the kernel refuses
/// output we keep the rest and stop reading until EPOLLOUT reports the socket writable again.
///
/// `@unchecked Sendable`: only `inbox` (behind a mutex) and `wakeFD` (an eventfd, written with one
/// atomic system call) are touched from other threads, and `peers`, `listeners` and `log` are set
/// before the thread starts; every other member is confined to the loop's own thread, which `run`
/// claims and every loop-thread entry point checks in debug builds (`assertInLoop`).
final class EventLoop: @unchecked Sendable {
    enum Command: Sendable {
        /// Take ownership of an accepted socket; `reject` answers with the rejection bytes and closes.
        case adopt(fd: Int32, reject: Bool)
        /// Stop accepting, ask every session to finish, exit when none remain or at `deadline`.
        case shutdown(deadline: UInt64)
    }

    let index: Int
    private let shared: TransportShared
    private let epollFD: Int32
    private let wakeFD: Int32
    private let inbox = Mutex<[Command]>([])
    /// Other loops, for round-robin distribution of accepted sockets (set before start).
    var peers: [EventLoop] = []
    /// Listening sockets this loop accepts on and closes at shutdown.
    var listeners: [Int32] = []
    /// False once accepting has ended for good: the listeners are out of the epoll set.
    private var accepting = true
    /// Where transport-level failures are reported (set before start).
    var log: (@Sendable (String) -> Void)?

    // Loop-thread state.
    private var makeSession: ((UInt64) -> any ConnectionSession)?
    private var connections: [Connection?] = []
    private var connectionCount = 0
    private let readBuffer: UnsafeMutableRawBufferPointer
    private var nextTimerCheck = UInt64.max
    private var shutdownDeadline: UInt64?
    /// Loop-thread only, as everything here; no dynamic access check on the per-iteration flush.
    @exclusivity(unchecked) private var pendingWakes: Set<Int> = []
    /// Connections whose turn ended with work left, resumed in order on the next pass, after
    /// the events gathered meanwhile: every connection gets a turn before any gets a second.
    @exclusivity(unchecked) private var ready: [Connection] = []
    #if DEBUG
    /// The loop's own thread, claimed by `run`.
    private var owner = ThreadOwner()
    #endif

    private static let listenerTag: UInt64 = 1 << 32
    private static let wakeTag: UInt64 = 2 << 32
    static let readBufferSize = 64 * 1024
    /// Reads of `readBufferSize` one connection gets per turn; a body streaming in at full speed
    /// then yields to the other connections of the loop every 256 KiB.
    static let readsPerTurn = 4

    init(index: Int, shared: TransportShared) throws(SocketError) {
        self.index = index
        self.shared = shared
        epollFD = try Syscall.check("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        do {
            wakeFD = try Syscall.check("eventfd") { eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC)) }
        } catch {
            Syscall.close(epollFD)
            throw error
        }
        readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 16)
        try register(wakeFD, tag: Self.wakeTag, events: EPOLLIN.rawValue)
    }

    deinit {
        readBuffer.deallocate()
        Syscall.close(wakeFD)
        Syscall.close(epollFD)
    }

    private func register(_ fd: Int32, tag: UInt64, events: UInt32) throws(SocketError) {
        var event = epoll_event()
        event.events = events
        event.data.u64 = tag | UInt64(UInt32(bitPattern: fd))
        _ = try Syscall.check("epoll_ctl(ADD)") { epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) }
    }

    /// Queues a command from any thread and wakes the loop.
    func send(_ command: Command) {
        inbox.withLock { $0.append(command) }
        wake()
    }

    private func wake() { Syscall.signalEventFD(wakeFD) }

    /// Traps in debug builds unless called on this loop's thread (the one running `run`), which
    /// is what lets the loop state go without locks; compiles to nothing in release builds.
    @inline(__always) private func assertInLoop(_ what: StaticString = #function) {
        #if DEBUG
        owner.checkClaimed(what)
        #endif
    }

    #if DEBUG
    /// The verdict `assertInLoop` acts on, without trapping (for tests of the check): whether
    /// the calling thread is this loop's. Meaningful once `run` has claimed the thread.
    func isInLoopThread() -> Bool { owner.isClaimedByCallingThread() }
    #endif

    // MARK: - The loop

    /// Runs until shutdown completes. Called on this loop's own thread.
    func run(sessionFactory: @escaping (UInt64) -> any ConnectionSession) {
        #if DEBUG
        owner.claim()
        #endif
        makeSession = sessionFactory
        for fd in listeners {
            // Level-triggered: accept is bounded per wake-up, and the rest stays reported.
            // Every loop watches the listeners; EPOLLEXCLUSIVE wakes one waiting loop per new
            // connection rather than all (epoll_ctl(2)), so a loop busy with a connection's turn
            // does not hold up accepting.
            do {
                try register(fd, tag: Self.listenerTag, events: EPOLLIN.rawValue | EPOLLEXCLUSIVE.rawValue)
            } catch { closeListeners() }
        }
        let maxEvents = 256
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: maxEvents)
        defer { events.deallocate() }
        while true {
            let timeout = waitTimeout(now: monotonicNanoseconds())
            let n: Int
            do {
                n = try Syscall.epollWait(epollFD, events, Int32(maxEvents), timeoutMilliseconds: timeout)
            } catch {
                // Only a programming error (a bad descriptor) gets here; the loop cannot go on.
                log?("event loop \(index): \(error)")
                break
            }
            let now = monotonicNanoseconds()
            if now >= acceptResumeAt { resumeAccepting() }
            if n > 0 {
                for i in 0..<n {
                    let tag = events[i].data.u64
                    let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: tag))
                    switch tag & ~0xFFFF_FFFF {
                    case Self.wakeTag: drainWake(now: now)
                    case Self.listenerTag:
                        // An event gathered before the listener left the epoll set in this same
                        // batch must not reach accept(2): the number may already be closed.
                        if accepting && listeners.contains(fd) { acceptAll(listener: fd, now: now) }
                    default: connectionEvent(fd: fd, events: events[i].events, now: now)
                    }
                }
            }
            runReadyTurns(now: now)
            flushWakes()
            if now >= nextTimerCheck || (shutdownDeadline.map { now >= $0 } ?? false) {
                checkTimers(now: now)
            }
            if let shutdownDeadline {
                if connectionCount == 0 { break }
                if now >= shutdownDeadline {
                    closeAll()
                    break
                }
            }
        }
        closeListeners()
        closeAll()
    }

    private func waitTimeout(now: UInt64) -> Int32 {
        // Connections with work left: look for new events without waiting, then serve them.
        if !ready.isEmpty { return 0 }
        var next = min(nextTimerCheck, acceptResumeAt)
        if let shutdownDeadline { next = min(next, shutdownDeadline) }
        if next == .max { return -1 }
        if next <= now { return 0 }
        // Round up so we never wake a hair before the deadline and spin.
        let ms = (next - now + 999_999) / 1_000_000
        return Int32(min(ms, 60_000))
    }

    private func drainWake(now: UInt64) {
        assertInLoop()
        Syscall.drainEventFD(wakeFD)
        let commands = inbox.withLock { inbox -> [Command] in
            let taken = inbox
            inbox.removeAll(keepingCapacity: true)
            return taken
        }
        for command in commands {
            switch command {
            case .adopt(let fd, let reject): adopt(fd: fd, reject: reject, now: now)
            case .shutdown(let deadline): beginShutdown(deadline: deadline, now: now)
            }
        }
    }

    // MARK: - Accepting

    private func acceptAll(listener: Int32, now: UInt64) {
        assertInLoop()
        // Bounded, so one busy listener cannot starve the connections this loop also serves.
        for _ in 0..<64 {
            let accepted: Int32?
            do throws(SocketError) {
                accepted = try Syscall.accept(listener)
            } catch  where error.errno == EINVAL || error.errno == EBADF {
                // EINVAL: the listening socket was shut down (TCPServer.shutdown does so to refuse
                // new connections at once); EBADF: it is gone. Either way no connection will come
                // from it again: retrying would fail the same way, as often as epoll reports it.
                if !shared.stopping.load(ordering: .acquiring) {
                    log?("\(error); no longer accepting connections")
                }
                stopAccepting()
                return
            } catch {
                // Out of descriptors (EMFILE, ENFILE) or memory: the pending connection stays
                // queued and the level-triggered listener would report it again at once, so stop
                // watching the listeners for a moment instead of spinning.
                log?("\(error); pausing accept for 100 ms")
                pauseAccepting(until: Self.saturatingAdd(now, 100_000_000))
                return
            }
            guard let fd = accepted else { return }
            // Responses are written whole; Nagle would only delay them (and the next request).
            try? Syscall.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1, "setsockopt(TCP_NODELAY)")
            let open = shared.openConnections.add(1, ordering: .relaxed).newValue
            let reject = open > shared.maxConnections.load(ordering: .relaxed)
            let target =
                peers.isEmpty
                ? self
                : peers[shared.nextLoop.add(1, ordering: .relaxed).newValue % peers.count]
            if target === self {
                adopt(fd: fd, reject: reject, now: now)
            } else {
                target.inbox.withLock { $0.append(.adopt(fd: fd, reject: reject)) }
                pendingWakes.insert(target.index)
            }
        }
    }

    private var acceptResumeAt = UInt64.max

    /// Takes the listeners out of the epoll set for a while. Removed rather than modified to
    /// watch no event: epoll reports EPOLLHUP and EPOLLERR whatever the mask says (epoll_ctl(2)),
    /// and a listener shut down meanwhile would wake the loop over and over.
    private func pauseAccepting(until: UInt64) {
        for fd in listeners { _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil) }
        acceptResumeAt = until
        if until < nextTimerCheck { nextTimerCheck = until }
    }

    private func resumeAccepting() {
        acceptResumeAt = .max
        guard accepting else { return }
        for fd in listeners {
            var event = epoll_event()
            event.events = EPOLLIN.rawValue | EPOLLEXCLUSIVE.rawValue
            event.data.u64 = Self.listenerTag | UInt64(UInt32(bitPattern: fd))
            _ = epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event)
        }
    }

    /// Ends accepting for good: the listeners leave the epoll set (they are closed by
    /// `closeListeners`, which also runs at shutdown).
    private func stopAccepting() {
        guard accepting else { return }
        accepting = false
        acceptResumeAt = .max
        for fd in listeners { _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil) }
    }

    private func flushWakes() {
        assertInLoop()
        guard !pendingWakes.isEmpty else { return }
        for i in pendingWakes { peers[i].wake() }
        pendingWakes.removeAll(keepingCapacity: true)
    }

    private func adopt(fd: Int32, reject: Bool, now: UInt64) {
        assertInLoop()
        if shutdownDeadline != nil && !reject {
            // Accepted just before the listener closed: there is no one to serve it now.
            Syscall.close(fd)
            shared.openConnections.subtract(1, ordering: .relaxed)
            return
        }
        let session = reject ? nil : makeSession?(now)
        let connection = Connection(fd: fd, session: session)
        do {
            try register(
                fd, tag: 0, events: EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue)
        } catch {
            Syscall.close(fd)
            shared.openConnections.subtract(1, ordering: .relaxed)
            return
        }
        if Int(fd) >= connections.count {
            connections.append(contentsOf: repeatElement(nil, count: Int(fd) + 1 - connections.count + 64))
        }
        connections[Int(fd)] = connection
        connectionCount += 1
        if reject {
            // Past the connection cap: the canned answer (503 with Retry-After), then close.
            connection.output = shared.rejection
            connection.closing = true
            flush(connection, now: now)
        } else {
            noteDeadline(connection, now: now)
            // A client usually sends its request right after connecting: read it now rather
            // than one pass later, when the edge of the new registration would report it.
            connection.readable = true
            readLoop(connection, now: now)
        }
    }

    // MARK: - Connection I/O

    private func connectionEvent(fd: Int32, events: UInt32, now: UInt64) {
        assertInLoop()
        guard Int(fd) < connections.count, let c = connections[Int(fd)] else { return }
        if events & EPOLLERR.rawValue != 0 {
            close(c)
            return
        }
        if events & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLHUP.rawValue) != 0 { c.readable = true }
        if events & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue) != 0 { c.peerHalfClosed = true }
        if events & EPOLLOUT.rawValue != 0 && c.hasPendingOutput {
            afterSessionCall(c, now: now)
            if connections[Int(fd)] !== c { return }
        }
        if c.readable && !c.hasPendingOutput {
            readLoop(c, now: now)
        }
    }

    /// One turn of reading: up to `readsPerTurn` reads, each handed to the session, stopping
    /// early while output is pending or the session holds requests back; a turn that ends with
    /// work left queues the connection for the loop's next pass.
    private func readLoop(_ c: Connection, now: UInt64) {
        assertInLoop()
        if c.reading { return }
        c.reading = true
        defer { c.reading = false }
        let fd = c.fd
        var reads = 0
        while connections[Int(fd)] === c && c.readable && !c.hasPendingOutput
            && !(c.session?.hasBufferedInput ?? false)
        {
            if reads == Self.readsPerTurn {
                enqueue(c)
                return
            }
            reads += 1
            let result: Int?
            do {
                result = try Syscall.read(fd, into: readBuffer)
            } catch {
                // ECONNRESET and the like: the peer is gone, nothing can be answered.
                close(c)
                return
            }
            guard let n = result else {
                c.readable = false
                return
            }
            if n > 0 {
                if c.lingering || c.closing || c.session == nil {
                    // Discarding input while our answer drains or our side is shut.
                    if n < readBuffer.count && !c.peerHalfClosed { c.readable = false }
                    continue
                }
                let disposition = c.session!.receive(
                    UnsafeRawBufferPointer(rebasing: readBuffer[0..<n]),
                    now: now, output: &c.output)
                if disposition == .closeAfterWrite { c.closing = true }
                // A short read drained the socket (the next byte brings a new edge), unless the
                // peer closed: its EOF edge has already been reported, so read on to it.
                if n < readBuffer.count && !c.peerHalfClosed { c.readable = false }
                afterSessionCall(c, now: now)
            } else {
                c.readable = false
                if c.lingering || c.closing || c.session == nil {
                    close(c)
                    return
                }
                _ = c.session!.peerClosed(now: now, output: &c.output)
                c.closing = true
                afterSessionCall(c, now: now)
            }
        }
    }

    /// Writes what the session produced and moves its timer.
    private func afterSessionCall(_ c: Connection, now: UInt64) {
        assertInLoop()
        if c.hasPendingOutput || c.closing { flush(c, now: now) }
        guard connections[Int(c.fd)] === c else { return }
        // Input the session held back (its output was backed up, or its turn ended): resumed on
        // the next pass once the output has drained, since no socket event would announce it.
        if !c.hasPendingOutput, !c.closing, let session = c.session, session.hasBufferedInput { enqueue(c) }
        noteDeadline(c, now: now)
    }

    private func enqueue(_ c: Connection) {
        if c.queued { return }
        c.queued = true
        ready.append(c)
    }

    /// Gives each connection queued by the previous pass one more turn: requests its session
    /// held back, else another turn of reading. One still left with work queues itself again.
    private func runReadyTurns(now: UInt64) {
        assertInLoop()
        guard !ready.isEmpty else { return }
        let turns = ready
        ready.removeAll(keepingCapacity: true)
        for c in turns {
            c.queued = false
            guard connections[Int(c.fd)] === c, !c.hasPendingOutput else { continue }
            if let session = c.session, session.hasBufferedInput, !c.closing {
                if session.receive(UnsafeRawBufferPointer(start: nil, count: 0), now: now, output: &c.output)
                    == .closeAfterWrite
                {
                    c.closing = true
                }
                afterSessionCall(c, now: now)
            } else if c.readable {
                readLoop(c, now: now)
            }
        }
    }

    /// Sends pending output; on a full socket keeps the rest (reading stops until EPOLLOUT).
    private func flush(_ c: Connection, now: UInt64) {
        while c.hasPendingOutput {
            let sent: Int?
            do {
                sent = try c.output.withUnsafeBytes { (raw) throws(SocketError) -> Int? in
                    try Syscall.send(c.fd, UnsafeRawBufferPointer(rebasing: raw[c.outputOffset...]))
                }
            } catch {
                // EPIPE, ECONNRESET: the peer is gone.
                close(c)
                return
            }
            guard let n = sent else { return }  // full: EPOLLOUT resumes us
            c.outputOffset += n
        }
        c.output.removeAll(keepingCapacity: c.output.capacity <= 1 << 16)
        c.outputOffset = 0
        // Reading, stopped while output was pending, resumes in `connectionEvent`.
        if c.closing && !c.lingering { startLinger(c, now: now) }
    }

    /// Closes our sending side and discards input for a short while before closing (RFC 9112
    /// section 9.6): closing at once with unread input makes the kernel send RST, which can
    /// destroy the response we just wrote before the client reads it.
    private func startLinger(_ c: Connection, now: UInt64) {
        if c.peerHalfClosed && !c.readable {
            close(c)
            return
        }
        do {
            try Syscall.shutdownWrite(c.fd)
        } catch {
            close(c)
            return
        }
        c.lingering = true
        var until = Self.saturatingAdd(now, shared.lingerNanoseconds)
        if let shutdownDeadline { until = min(until, shutdownDeadline) }
        c.deadline = until
        if until < nextTimerCheck { nextTimerCheck = until }
        if c.readable { readLoop(c, now: now) }
    }

    private func noteDeadline(_ c: Connection, now: UInt64) {
        if c.lingering { return }
        if c.closing {
            // Output still pending to a peer that does not read: give it the linger time, no more.
            if c.deadline == nil { c.deadline = Self.saturatingAdd(now, shared.lingerNanoseconds) }
        } else {
            c.deadline = c.session?.deadline
        }
        if let d = c.deadline, d < nextTimerCheck { nextTimerCheck = d }
    }

    private func checkTimers(now: UInt64) {
        assertInLoop()
        var next = UInt64.max
        for case let c? in connections {
            guard let d = c.deadline else { continue }
            if d <= now {
                if c.lingering || c.closing {
                    close(c)
                    continue
                }
                guard let session = c.session else { close(c); continue }
                let disposition = session.deadlineExpired(now: now, output: &c.output)
                if disposition == .closeAfterWrite { c.closing = true }
                afterSessionCall(c, now: now)
                if connections[Int(c.fd)] !== c { continue }
                if !c.lingering, let nd = c.deadline, nd <= now {
                    // A session that did not move its deadline is closed rather than spun on.
                    close(c)
                    continue
                }
            }
            if connections[Int(c.fd)] === c, let d2 = c.deadline { next = min(next, d2) }
        }
        nextTimerCheck = min(next, acceptResumeAt)
    }

    private static func saturatingAdd(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? .max : sum
    }

    private func close(_ c: Connection) {
        assertInLoop()
        guard Int(c.fd) < connections.count, connections[Int(c.fd)] === c else { return }
        connections[Int(c.fd)] = nil
        connectionCount -= 1
        // Closing removes the descriptor from the epoll set as well.
        Syscall.close(c.fd)
        shared.openConnections.subtract(1, ordering: .relaxed)
    }

    private func closeAll() {
        for case let c? in connections { close(c) }
    }

    /// Removes the listeners from the epoll set, then closes them: closing alone leaves the
    /// registration in place while any other reference to the socket exists, and the number
    /// may be reused by the next socket opened.
    private func closeListeners() {
        stopAccepting()
        for fd in listeners { Syscall.close(fd) }
        listeners = []
    }

    // MARK: - Shutdown

    private func beginShutdown(deadline: UInt64, now: UInt64) {
        assertInLoop()
        guard shutdownDeadline == nil else { return }
        shutdownDeadline = deadline
        closeListeners()
        for case let c? in connections {
            guard let session = c.session, !c.closing else { continue }
            let disposition = session.beginShutdown(now: now, output: &c.output)
            if disposition == .closeAfterWrite { c.closing = true }
            afterSessionCall(c, now: now)
        }
    }
}
