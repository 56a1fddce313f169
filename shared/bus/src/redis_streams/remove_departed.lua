-- Removes the consumers of group ARGV[1] on stream KEYS[1] that hold no pending entries and
-- have not asked for anything for more than ARGV[3] milliseconds, except ARGV[2] (the caller).
-- Checked and removed in one script, so a consumer cannot take an entry in between (an entry
-- pending for a removed consumer could never be claimed again). Returns the names removed.
local removed = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local fields = {}
  for i = 1, #consumer, 2 do
    fields[consumer[i]] = consumer[i + 1]
  end
  if fields['name'] ~= ARGV[2] and fields['pending'] == 0
      and fields['idle'] > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
    removed[#removed + 1] = fields['name']
  end
end
return removed
