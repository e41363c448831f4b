//! Fault proxies between nodes: UDP (QUIC replication) and TCP (HTTP, gRPC). A test points a
//! peer at the proxy's address instead of the node's, then cuts the link, heals it, or shapes
//! it like a WAN link (latency and bandwidth), and reads how many bytes crossed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Queue a shaped link holds before it drops datagrams.
const MAX_QUEUE_DELAY: Duration = Duration::from_millis(50);

/// How the link behaves right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkShape {
    /// Drop everything (UDP) / refuse and reset connections (TCP).
    pub cut: bool,
    /// One-way delay added to every datagram.
    pub latency: Duration,
    /// Extra delay per datagram, uniform in `0..jitter` (UDP; datagrams may reorder, as on a
    /// real WAN).
    pub jitter: Duration,
    /// Datagrams dropped at random, per mille (UDP only).
    pub loss_per_mille: u16,
    /// Bytes per second in each direction; `None` for unlimited.
    pub bandwidth: Option<u64>,
}

impl LinkShape {
    /// A WAN link: `mbit` megabits per second each way, `rtt` round-trip time.
    pub fn wan(mbit: u64, rtt: Duration) -> Self {
        Self {
            cut: false,
            latency: rtt / 2,
            jitter: Duration::ZERO,
            loss_per_mille: 0,
            bandwidth: Some(mbit * 1_000_000 / 8),
        }
    }
}

/// Which way of a link a one-way cut drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the proxy's clients toward its target.
    Upstream,
    /// From the target back to the clients.
    Downstream,
}

/// Shared state of a proxy.
#[derive(Default)]
struct Control {
    shape: Mutex<LinkShape>,
    /// Bytes forwarded toward the target and back.
    upstream_bytes: AtomicU64,
    downstream_bytes: AtomicU64,
    /// Bumped on every cut, so TCP pumps started before it stop.
    generation: AtomicU64,
    /// One-way cuts (UDP): drop datagrams going toward the target / back from it.
    drop_upstream: AtomicBool,
    drop_downstream: AtomicBool,
}

impl Control {
    fn dropped(&self, direction: Direction) -> bool {
        match direction {
            Direction::Upstream => self.drop_upstream.load(Ordering::Relaxed),
            Direction::Downstream => self.drop_downstream.load(Ordering::Relaxed),
        }
    }
}

/// Delivers datagrams in order, each after the time the link needs to transmit it (bandwidth)
/// plus the link's latency. Transmission times are computed as datagrams arrive; a second stage
/// only waits for each delivery time, so latency is pipelined, not paid per datagram.
fn shaper(
    control: Arc<Control>,
    socket: Arc<UdpSocket>,
    direction: Direction,
) -> mpsc::UnboundedSender<(Vec<u8>, SocketAddr)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, SocketAddr)>();
    let (delay_tx, mut delay_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>, SocketAddr)>();
    let pacing = control.clone();
    tokio::spawn(async move {
        let control = pacing;
        let mut link_free_at = Instant::now();
        while let Some((datagram, to)) = rx.recv().await {
            let shape = *control.shape.lock();
            if shape.cut || control.dropped(direction) {
                continue;
            }
            if shape.loss_per_mille > 0 && rand::random_range(0..1000u16) < shape.loss_per_mille {
                continue;
            }
            let now = Instant::now();
            let start = link_free_at.max(now);
            // A router's queue is finite: past ~50 ms of backlog, datagrams are dropped (tail
            // drop), so congestion control sees the link's real capacity.
            if start.saturating_duration_since(now) > MAX_QUEUE_DELAY {
                continue;
            }
            let transmit = match shape.bandwidth {
                Some(rate) if rate > 0 => {
                    Duration::from_secs_f64(datagram.len() as f64 / rate as f64)
                }
                _ => Duration::ZERO,
            };
            link_free_at = start + transmit;
            let jitter = match shape.jitter.as_micros() {
                0 => Duration::ZERO,
                max => Duration::from_micros(rand::random_range(0..max as u64)),
            };
            if delay_tx
                .send((link_free_at + shape.latency + jitter, datagram, to))
                .is_err()
            {
                return;
            }
        }
    });
    tokio::spawn(async move {
        // Jitter makes delivery times non-monotonic: keep the pending datagrams ordered by
        // delivery time so a late one does not hold back the ones behind it.
        let mut pending: std::collections::BinaryHeap<Pending> =
            std::collections::BinaryHeap::new();
        let mut sequence = 0u64;
        loop {
            let next = pending.peek().map(|p| p.deliver_at);
            tokio::select! {
                received = delay_rx.recv() => {
                    let Some((deliver_at, datagram, to)) = received else { return };
                    sequence += 1;
                    pending.push(Pending { deliver_at, sequence, datagram, to });
                    continue;
                }
                _ = sleep_until_or_forever(next) => {}
            }
            let Some(due) = pending.pop() else { continue };
            if control.shape.lock().cut || control.dropped(direction) {
                continue;
            }
            if socket.send_to(&due.datagram, due.to).await.is_ok() {
                let counter = match direction {
                    Direction::Upstream => &control.upstream_bytes,
                    Direction::Downstream => &control.downstream_bytes,
                };
                counter.fetch_add(due.datagram.len() as u64, Ordering::Relaxed);
            }
        }
    });
    tx
}

/// A datagram waiting for its delivery time (earliest first, then in arrival order).
struct Pending {
    deliver_at: Instant,
    sequence: u64,
    datagram: Vec<u8>,
    to: SocketAddr,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.deliver_at, self.sequence) == (other.deliver_at, other.sequence)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse so the earliest delivery is on top.
        (other.deliver_at, other.sequence).cmp(&(self.deliver_at, self.sequence))
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A UDP proxy on loopback in front of `target`.
pub struct UdpProxy {
    pub addr: SocketAddr,
    control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpProxy {
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = listen.local_addr()?;
        let control = Arc::new(Control::default());
        let task_control = control.clone();
        let task = tokio::spawn(async move {
            let to_clients = shaper(task_control.clone(), listen.clone(), Direction::Downstream);
            let mut upstreams: HashMap<SocketAddr, mpsc::UnboundedSender<(Vec<u8>, SocketAddr)>> =
                HashMap::new();
            let mut buffer = vec![0u8; 65_536];
            loop {
                let Ok((len, client)) = listen.recv_from(&mut buffer).await else {
                    return;
                };
                let datagram = buffer[..len].to_vec();
                if let std::collections::hash_map::Entry::Vacant(slot) = upstreams.entry(client) {
                    // One upstream socket per client, so replies find their way back.
                    let Ok(upstream) = UdpSocket::bind("127.0.0.1:0").await else {
                        continue;
                    };
                    let upstream = Arc::new(upstream);
                    let sender =
                        shaper(task_control.clone(), upstream.clone(), Direction::Upstream);
                    let back = to_clients.clone();
                    tokio::spawn(async move {
                        let mut buffer = vec![0u8; 65_536];
                        while let Ok((len, _)) = upstream.recv_from(&mut buffer).await {
                            if back.send((buffer[..len].to_vec(), client)).is_err() {
                                return;
                            }
                        }
                    });
                    slot.insert(sender);
                }
                if let Some(sender) = upstreams.get(&client) {
                    let _ = sender.send((datagram, target));
                }
            }
        });
        Ok(Self {
            addr,
            control,
            task,
        })
    }

    pub fn cut(&self) {
        self.control.shape.lock().cut = true;
    }

    /// Heals a cut, both ways, and any one-way cut.
    pub fn heal(&self) {
        self.control.shape.lock().cut = false;
        self.control.drop_upstream.store(false, Ordering::Relaxed);
        self.control.drop_downstream.store(false, Ordering::Relaxed);
    }

    /// Drops datagrams one way only (the other way keeps flowing).
    pub fn cut_one_way(&self, direction: Direction) {
        match direction {
            Direction::Upstream => self.control.drop_upstream.store(true, Ordering::Relaxed),
            Direction::Downstream => self.control.drop_downstream.store(true, Ordering::Relaxed),
        }
    }

    pub fn shape(&self, shape: LinkShape) {
        *self.control.shape.lock() = shape;
    }

    /// Bytes forwarded (toward the target, back from it).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.control.upstream_bytes.load(Ordering::Relaxed),
            self.control.downstream_bytes.load(Ordering::Relaxed),
        )
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy on loopback in front of `target`. Cutting resets every open connection and
/// refuses new ones until healed.
pub struct TcpProxy {
    pub addr: SocketAddr,
    control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let control = Arc::new(Control::default());
        let task_control = control.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if task_control.shape.lock().cut {
                    drop(client);
                    continue;
                }
                let control = task_control.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let generation = control.generation.load(Ordering::SeqCst);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pump(client_read, server_write, control.clone(), generation, true);
                    let down = pump(
                        server_read,
                        client_write,
                        control.clone(),
                        generation,
                        false,
                    );
                    // A clean end of one direction (a half-close) is passed on and the other
                    // direction keeps going; an error or a cut ends both.
                    tokio::pin!(up, down);
                    tokio::select! {
                        clean = &mut up => if clean { down.await; },
                        clean = &mut down => if clean { up.await; },
                    }
                });
            }
        });
        Ok(Self {
            addr,
            control,
            task,
        })
    }

    pub fn cut(&self) {
        self.control.shape.lock().cut = true;
        self.control.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.control.shape.lock().cut = false;
    }

    /// Adds `latency` to every read forwarded either way (0 to stop).
    pub fn set_latency(&self, latency: Duration) {
        self.control.shape.lock().latency = latency;
    }

    /// Shapes every connection, both ways: each forwarded read waits the latency plus a uniform
    /// share of the jitter (order is kept: TCP is a stream), and each direction is paced to the
    /// bandwidth. Loss does not apply to a byte stream (TCP would retransmit it); a cut does.
    pub fn shape(&self, shape: LinkShape) {
        let mut current = self.control.shape.lock();
        *current = LinkShape {
            cut: current.cut,
            loss_per_mille: 0,
            ..shape
        };
    }

    pub fn bytes(&self) -> (u64, u64) {
        (
            self.control.upstream_bytes.load(Ordering::Relaxed),
            self.control.downstream_bytes.load(Ordering::Relaxed),
        )
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    control: Arc<Control>,
    generation: u64,
    upstream: bool,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    // When this direction's link has finished sending what it forwarded so far.
    let mut link_free_at = Instant::now();
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                                if control.generation.load(Ordering::SeqCst) != generation {
                    return false;
                }
                continue;
            }
        };
        let Ok(n) = read else { return false };
        if control.generation.load(Ordering::SeqCst) != generation {
            return false;
        }
        if n == 0 {
            return to.shutdown().await.is_ok();
        }
        let shape = *control.shape.lock();
        let mut delay = shape.latency;
        if !shape.jitter.is_zero() {
            delay += shape.jitter.mul_f64(rand::random::<f64>());
        }
        if let Some(bytes_per_second) = shape.bandwidth.filter(|b| *b > 0) {
            let now = Instant::now();
            link_free_at =
                link_free_at.max(now) + Duration::from_secs_f64(n as f64 / bytes_per_second as f64);
            delay += link_free_at - now;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return false;
        }
        let counter = if upstream {
            &control.upstream_bytes
        } else {
            &control.downstream_bytes
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that reads everything and answers with the byte count.
    async fn counting_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut total = 0u64;
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                    let _ = socket.write_all(&total.to_le_bytes()).await;
                });
            }
        });
        addr
    }

    async fn send_through(proxy: &TcpProxy, bytes: usize) -> (u64, Duration) {
        let started = std::time::Instant::now();
        let mut socket = TcpStream::connect(proxy.addr).await.expect("connect");
        socket.write_all(&vec![7u8; bytes]).await.expect("write");
        socket.shutdown().await.expect("shutdown");
        let mut answer = [0u8; 8];
        socket.read_exact(&mut answer).await.expect("answer");
        (u64::from_le_bytes(answer), started.elapsed())
    }

    #[tokio::test]
    async fn tcp_shaping_paces_bandwidth_and_adds_latency() {
        let proxy = TcpProxy::start(counting_server().await)
            .await
            .expect("proxy");
        let (received, unshaped) = send_through(&proxy, 1 << 20).await;
        assert_eq!(received, 1 << 20);
        assert!(unshaped < Duration::from_millis(400), "{unshaped:?}");

        // 2 MB/s: a MiB needs at least half a second; 50 ms (+ up to 20 ms) per forwarded read
        // on top.
        proxy.shape(LinkShape {
            cut: false,
            latency: Duration::from_millis(50),
            jitter: Duration::from_millis(20),
            loss_per_mille: 500,
            bandwidth: Some(2_000_000),
        });
        let (received, shaped) = send_through(&proxy, 1 << 20).await;
        assert_eq!(received, 1 << 20, "nothing is lost on a stream");
        assert!(shaped >= Duration::from_millis(520), "{shaped:?}");
        assert!(shaped < Duration::from_secs(10), "{shaped:?}");

        proxy.shape(LinkShape::default());
        let (received, healed) = send_through(&proxy, 1 << 20).await;
        assert_eq!(received, 1 << 20);
        assert!(healed < Duration::from_millis(400), "{healed:?}");
        assert_eq!(proxy.bytes().0, 3 << 20);
    }
}
