//! Lock-free single-producer single-consumer ring buffer over a memory map.
