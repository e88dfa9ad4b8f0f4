#[redwood::remote]
fn total(items: Vec<u64>) -> u64
where
    u64: Copy,
{
    items.iter().sum()
}

fn main() {}
