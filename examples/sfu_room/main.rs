//! temp
#![allow(dead_code)]
mod media;
fn main() {}
