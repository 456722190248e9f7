-- wrk script for the mirror benchmark: a few endpoints in rotation.
local paths = {
  "/api/v1/users/42", "/api/v1/orders?page=1", "/api/v1/health",
  "/api/v1/users/7", "/api/v1/missing",
}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1], {["Accept"] = "application/json"})
end
