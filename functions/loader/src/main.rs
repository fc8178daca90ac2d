fn main() {
    eprintln!("{}: the handler is not implemented yet", loader::NAME);
    std::process::exit(1);
}
