//! S16's record of what one member received of its room's chats: which
//! were due to it, and which of those it missed.

use std::sync::atomic::Ordering;

use super::Ctx;

/// What one connection saw of its room's chats. It is due every chat
/// sent after its `join` was answered (numbered above `floor`); one sent
/// before may come (the server admits a connection before its `join`) or
/// not. Chats of one room come from different members' connections, so
/// two sent a few milliseconds apart may reach the server in either order:
/// a due chat is missed only when it has not come by the time one
/// [`Track::SPAN`] chats later has (or when the run ends).
pub(super) struct Track {
    /// The room's last chat when the `join` was answered.
    floor: u64,
    /// The highest sequence number received or sent (`floor` until then).
    last: u64,
    /// Bit `i`: chat `last - i` arrived (or was sent by this member), or
    /// was not due (at or below `floor`).
    seen: u64,
    /// The due chats missed for sure so far.
    pub(super) missed: u64,
}

impl Track {
    pub(super) const SPAN: u64 = 64;

    /// A member whose `join` was answered when its room's last chat was
    /// `floor`.
    pub(super) fn after(floor: u64) -> Track {
        Track {
            floor,
            last: floor,
            seen: u64::MAX,
            missed: 0,
        }
    }

    /// Chat `s` arrived (or was sent by this member).
    pub(super) fn saw(&mut self, s: u64, ctx: &Ctx) {
        if s <= self.floor {
            // Sent before the `join` was answered: not due.
            return;
        }
        if s > self.last {
            let shift = s - self.last;
            // The due chats that leave the span without having come: its
            // top `shift` bits, those not set.
            let leaving = shift.min(Self::SPAN);
            self.missed += u64::from((!self.seen >> (Self::SPAN - leaving)).count_ones());
            // Those skipped past the span entirely.
            if shift > Self::SPAN {
                self.missed += shift - Self::SPAN;
            }
            self.seen = if shift >= Self::SPAN {
                0
            } else {
                self.seen << shift
            } | 1;
            self.last = s;
            return;
        }
        let back = self.last - s;
        if back >= Self::SPAN {
            ctx.disorder.fetch_add(1, Ordering::Relaxed);
        } else if self.seen >> back & 1 == 1 {
            ctx.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            self.seen |= 1 << back;
            ctx.reordered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The due chats up to `last` (the room's last) not come by the end.
    pub(super) fn close(&mut self, last: u64) {
        self.missed += u64::from((!self.seen).count_ones()) + last.saturating_sub(self.last);
        (self.last, self.seen) = (self.last.max(last), u64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::client::Target;
    use crate::scenarios::shape::settle;

    #[test]
    fn gaps_count_as_missed() {
        let target = Target::parse("ws://127.0.0.1:9/").unwrap_or_else(|e| panic!("{e}"));
        let ctx = Ctx::new(target, 2, 1, 0);
        // Joined when the room's last chat was 4; 8 comes late, 7 never.
        let mut t = Track::after(4);
        for s in [5, 6, 9, 10, 8] {
            t.saw(s, &ctx);
        }
        assert_eq!((t.last, t.missed), (10, 0));
        assert_eq!(ctx.reordered.load(Ordering::SeqCst), 1);
        t.saw(10, &ctx);
        assert_eq!(ctx.duplicates.load(Ordering::SeqCst), 1);
        // 7 leaves the span once 71 has come; 11..=70 are still in it.
        t.saw(71, &ctx);
        assert_eq!(t.missed, 1);
        // 200: 11..=70 leave it, 72..=136 never were in it.
        t.saw(200, &ctx);
        assert_eq!(t.missed, 1 + 60 + 65);
        // 100 comes after its place left the span.
        t.saw(100, &ctx);
        assert_eq!(ctx.disorder.load(Ordering::SeqCst), 1);
        // At the end: the room's last was 202: 137..=199, 201, 202 never came.
        t.close(202);
        assert_eq!(t.missed, 126 + 63 + 2);
        settle(&ctx, &t);
        assert_eq!(ctx.missed_peers.load(Ordering::SeqCst), 1);
        assert_eq!(ctx.missed.load(Ordering::SeqCst), 191);
    }

    #[test]
    fn only_chats_sent_after_the_join_answer_are_due() {
        let target = Target::parse("ws://127.0.0.1:9/").unwrap_or_else(|e| panic!("{e}"));
        let ctx = Ctx::new(target, 2, 1, 0);
        // A replacement answered when its room's last chat was 5, and the
        // run ended before the room's next: nothing was due.
        let mut t = Track::after(5);
        t.close(5);
        assert_eq!(t.missed, 0);
        // Chats sent before the answer may come (it was admitted before
        // its `join`), in any order, or not: none counts, either way.
        let mut t = Track::after(5);
        for s in [7, 4, 5, 8, 3] {
            t.saw(s, &ctx);
        }
        // 6, sent after the answer, never came.
        t.close(8);
        assert_eq!(t.missed, 1);
        let count = |x: &AtomicU64| x.load(Ordering::SeqCst);
        assert_eq!(
            (
                count(&ctx.disorder),
                count(&ctx.duplicates),
                count(&ctx.reordered)
            ),
            (0, 0, 0)
        );
        // A member left out of its room gets nothing: every chat sent
        // after its answer is missed, however recently it joined.
        let mut t = Track::after(5);
        t.close(8);
        assert_eq!(t.missed, 3);
        // Its own chat counts as come; closing twice counts nothing twice.
        let mut t = Track::after(0);
        t.saw(1, &ctx);
        t.close(2);
        t.close(2);
        assert_eq!(t.missed, 1);
        // Leaving: only the chats gone out of the span are missed for sure.
        let mut t = Track::after(10);
        t.saw(12, &ctx);
        assert_eq!(t.missed, 0);
        t.saw(12 + Track::SPAN, &ctx);
        assert_eq!(t.missed, 1);
        settle(&ctx, &t);
        assert_eq!((count(&ctx.missed_peers), count(&ctx.missed)), (1, 1));
    }
}
