struct Counter;

impl Counter {
    #[redwood::remote]
    fn count(&self, x: u64) -> u64 {
        x
    }
}

fn main() {}
