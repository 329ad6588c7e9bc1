-- Argo CD health of a plantwatch.io AlertReceiver (its conditions: crds/alertreceivers.plantwatch.io.yaml).
-- Accepted is the operator's verdict: the receiver is valid and its Secrets hold the keys it names, or
-- why not (InvalidSpec, SecretNotFound: the gateway cannot send to it until they exist).
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
local accepted = find(obj.status.conditions, "Accepted")
if accepted == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator's Accepted condition"
elseif accepted.status == "False" then
  hs.status = "Degraded"
  hs.message = says(accepted)
elseif accepted.status ~= "True" then
  hs.status = "Progressing"
  hs.message = says(accepted)
else
  hs.status = "Healthy"
  hs.message = "Accepted: " .. tostring(accepted.message)
end
return hs
