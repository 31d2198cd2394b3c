# netfix doctor detector `drops`: nothing to read once or per sample. Its input is the
# skb:kfree_skb trace that trace.sh records with --trace-drops.

once_drops() {
  return 0
}

sample_drops() {
  return 0
}
