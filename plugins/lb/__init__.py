"""Load-balancer helpers the built-in `slb` and `maintenance` plugins share (not a plugin):
find an instance in CLB vserver groups (`clb`) and ALB/NLB server groups (`server_groups`),
batch changes per group (`batch`), record and restore memberships (`membership`), and the
shared vocabulary: the change actions and the per-call limits, 20 and 200 (`actions`).
They act only through what the plugins hand them: `ctx.cloud` for reads, `ctx.act_many`."""
