//! The attempt ends of every lane as one stream, without an allocation per end: each lane's
//! stream is polled in turn, and the end of a lane's stream is an item too.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

use crate::raw::executor::{AttemptEnd, AttemptEnds};

/// The merged ends: `(lane, generation, Some(end))`, then `(lane, generation, None)` when the
/// stream of that opening of the lane ends.
#[derive(Default)]
pub(crate) struct LaneEnds {
    streams: Vec<(usize, u32, AttemptEnds)>,
    /// Where the next poll starts, so one busy lane does not starve the others.
    next: usize,
}

impl LaneEnds {
    /// Adds the ends of `lane`'s opening number `generation`.
    pub(crate) fn push(&mut self, lane: usize, generation: u32, ends: AttemptEnds) {
        self.streams.push((lane, generation, ends));
    }

    /// Whether no stream is left (the stream would then wait for ever).
    pub(crate) fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

impl Stream for LaneEnds {
    type Item = (usize, u32, Option<AttemptEnd>);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let count = self.streams.len();
        if count == 0 {
            return Poll::Ready(None);
        }
        let start = self.next % count;
        for step in 0..count {
            let i = (start + step) % count;
            let (lane, generation, stream) = &mut self.streams[i];
            let (lane, generation) = (*lane, *generation);
            match stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(end)) => {
                    self.next = i + 1;
                    return Poll::Ready(Some((lane, generation, Some(end))));
                }
                Poll::Ready(None) => {
                    drop(self.streams.swap_remove(i));
                    self.next = i;
                    return Poll::Ready(Some((lane, generation, None)));
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::envelope::Outcome;
    use crate::raw::executor::Ended;
    use futures::StreamExt;

    fn ends(tasks: std::ops::Range<u64>) -> AttemptEnds {
        futures::stream::iter(
            tasks.map(|t| AttemptEnd::new(t, 1, Ended::Reported(Outcome::Ok(Vec::new())))),
        )
        .boxed()
    }

    #[tokio::test]
    async fn every_end_and_every_stream_end_comes_once_taking_turns() {
        let mut merged = LaneEnds::default();
        merged.push(0, 1, ends(0..3));
        merged.push(1, 4, ends(10..11));
        let got: Vec<(usize, u32, Option<u64>)> = merged
            .by_ref()
            .take(6)
            .map(|(l, g, e)| (l, g, e.map(|e| e.task)))
            .collect()
            .await;
        assert_eq!(
            got,
            [
                (0, 1, Some(0)),
                (1, 4, Some(10)),
                (0, 1, Some(1)),
                (1, 4, None),
                (0, 1, Some(2)),
                (0, 1, None),
            ]
        );
        assert!(merged.is_empty());
    }
}
