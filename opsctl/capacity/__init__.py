"""`opsctl capacity`: what the system needs for a demand, from measured per-replica throughput."""
