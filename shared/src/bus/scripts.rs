//! Lua used by the bus. Run with `EVAL` (not `EVALSHA`) where they sit inside `MULTI`, so a
//! Redis restart that forgot the script cache cannot make half a transaction fail.

/// Append an entry and, when ordered, its id to the contact's order list.
/// KEYS[1] stream, KEYS[2] order list. ARGV[1] order token ('' = unordered), ARGV[2] order list
/// TTL seconds, ARGV[3..] field/value pairs.
pub const PUBLISH: &str = r"
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
if ARGV[1] ~= '' then
  redis.call('RPUSH', KEYS[2], id)
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return id
";

/// Whether entry ARGV[2] may be handled now: it is the head of its contact's order list (or
/// not in it). Heads that are no longer pending in the group (acknowledged elsewhere) are
/// dropped. KEYS[1] order list, KEYS[2] stream. ARGV[1] group. Returns 1 (go) or 0 (wait).
pub const ORDER_TURN: &str = r"
for _ = 1, 64 do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if (not head) or head == ARGV[2] then return 1 end
  local p = redis.call('XPENDING', KEYS[2], ARGV[1], head, head, 1)
  if #p == 0 then
    redis.call('LPOP', KEYS[1])
  else
    if not redis.call('LPOS', KEYS[1], ARGV[2]) then return 1 end
    return 0
  end
end
return 0
";

/// [`ORDER_TURN`] for several entries at once (the ordered entries of one read): one round
/// trip instead of one each. KEYS[1] stream, KEYS[2..] the order list of each entry.
/// ARGV[1] group, ARGV[2..] the entry ids, in the order of their lists. Returns 1 (go) or
/// 0 (wait) per entry.
pub const ORDER_HEADS: &str = r"
local out = {}
for i = 2, #KEYS do
  local id = ARGV[i]
  local go = 0
  for _ = 1, 64 do
    local head = redis.call('LINDEX', KEYS[i], 0)
    if (not head) or head == id then go = 1 break end
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], head, head, 1)
    if #p == 0 then
      redis.call('LPOP', KEYS[i])
    else
      if not redis.call('LPOS', KEYS[i], id) then go = 1 end
      break
    end
  end
  out[#out + 1] = go
end
return out
";

/// Renew the idle time of entries this consumer still owns; returns the ids renewed.
/// KEYS[1] stream. ARGV[1] group, ARGV[2] consumer, ARGV[3..] ids.
pub const RENEW: &str = r"
local renewed = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    renewed[#renewed + 1] = ARGV[i]
  end
end
return renewed
";
