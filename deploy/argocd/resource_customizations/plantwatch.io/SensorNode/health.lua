-- Argo CD health of a plantwatch.io SensorNode (its conditions: crds/sensornodes.plantwatch.io.yaml).
-- Ready is the operator's: the node's config is rendered into the gateway (False: the spec cannot be).
-- Online is the gateway's: readings arrive within the heartbeat (False: the node went silent; Unknown,
-- reason NoData, until the gateway's first report), so a node no device feeds yet stays Progressing.
-- Argo CD runs this without Lua's string library (base, table and a safe os only): `..` and tostring.
local function find(conditions, kind)
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function says(c)
  return c.type .. "=" .. tostring(c.status) .. " (" .. tostring(c.reason) .. "): " .. tostring(c.message)
end

local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator's first status"
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile generation " .. tostring(generation) .. " (status is of generation " .. tostring(observed) .. ")"
  return hs
end
local ready = find(obj.status.conditions, "Ready")
local online = find(obj.status.conditions, "Online")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator's Ready condition"
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = says(ready)
elseif ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = says(ready)
elseif online == nil or online.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = "Rendered into the gateway; waiting for the node's first reading"
elseif online.status == "False" then
  hs.status = "Degraded"
  hs.message = says(online)
else
  hs.status = "Healthy"
  hs.message = "Ready: " .. tostring(ready.message) .. "; Online: " .. tostring(online.message)
end
return hs
