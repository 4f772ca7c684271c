fn main() {
    println!("the harness lands with its own issue");
}
