#[redwood::remote(retries = 3)]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {}
