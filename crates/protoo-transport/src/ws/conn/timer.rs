//! The connection task's one timer: a keepalive ping every interval, a
//! bound on the pong, then a bound on the close handshake; and, on a
//! connection that keeps unconfirmed frames, the due time of the next
//! confirmation ping (the timer fires at the earlier of the two).

use super::*;

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(super) fn arm(&mut self, at: Instant) {
        self.deadline = Some(at);
        self.rearm = true;
    }

    /// Starts (or keeps) the bound on a closing connection.
    pub(super) fn arm_close(&mut self) {
        if !self.linger {
            self.linger = true;
            self.arm(Instant::now() + self.close_timeout);
        }
    }

    /// When the timer is to fire: the earlier of the deadline and the
    /// confirmation ping's due time.
    pub(super) fn wake_at(&self) -> Option<Instant> {
        let confirm = if self.confirm_armed {
            self.confirm_at()
        } else {
            None
        };
        match (self.deadline, confirm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The timer fired: whichever of the two is due runs; the timer is
    /// then set again for what is left.
    pub(super) fn on_wake(&mut self) {
        let now = Instant::now();
        self.rearm = true;
        if self.confirm_armed {
            self.on_confirm_timer(now);
        }
        if self.deadline.is_some_and(|at| at <= now) {
            self.on_timer();
        }
    }

    fn on_timer(&mut self) {
        self.deadline = None;
        if self.linger || self.state != State::Open {
            tracing::debug!("WebSocket close timed out: dropping the connection");
            self.state = State::Done;
            return;
        }
        let now = Instant::now();
        match self.keepalive {
            Keepalive::Idle => {
                self.ping = true;
                self.paused = false;
                self.keepalive = Keepalive::AwaitingPong { since: now };
                self.arm(now + self.pong_timeout);
            }
            Keepalive::AwaitingPong { .. } if self.paused => {
                // We were not reading: the answer may be waiting unread.
                self.keepalive = Keepalive::Idle;
                if let Some(interval) = self.ping_interval {
                    self.arm(now + interval);
                }
            }
            Keepalive::AwaitingPong { .. } => {
                tracing::debug!("no answer to the keepalive ping: dropping the connection");
                self.finish(CloseReason::new(
                    None,
                    KEEPALIVE_TIMEOUT_REASON,
                    Initiator::Local,
                ));
            }
        }
    }
}
