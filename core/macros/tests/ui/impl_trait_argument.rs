#[redwood::remote]
fn count(items: impl Iterator<Item = u64>) -> usize {
    items.count()
}

fn main() {}
