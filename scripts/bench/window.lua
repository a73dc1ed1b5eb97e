-- One-month windows of 2026, a different month per request, as a calendar view paging through a year.
local months = {"01","02","03","04","05","06","07","08","09","10","11"}
local i = 0
request = function()
  i = i + 1
  local m = months[(i % #months) + 1]
  local n = string.format("%02d", tonumber(m) + 1)
  return wrk.format("GET", "/v1/calendar/events?start=2026-" .. m .. "-01T00:00:00Z&end=2026-" .. n .. "-01T00:00:00Z&tz=Europe/Berlin")
end
