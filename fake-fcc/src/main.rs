fn main() {
    println!("fake-fcc: not yet implemented");
}
