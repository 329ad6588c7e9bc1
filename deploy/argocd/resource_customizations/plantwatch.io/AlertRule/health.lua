-- Argo CD health of a plantwatch.io AlertRule (its conditions: crds/alertrules.plantwatch.io.yaml).
-- Accepted is the operator's verdict: the rule is loaded into the gateway, or why not (InvalidSpec,
-- DetectorNotFound, UnknownReceiver, NoMatchingSeries). PrometheusRule says whether the rule is also
-- rendered for Prometheus; a rule PromQL cannot express, or a cluster without the Prometheus Operator,
-- still alerts through the gateway, so it is Healthy and the message says so.
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
local prometheus = find(obj.status.conditions, "PrometheusRule")
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
  if prometheus ~= nil and prometheus.status ~= "True" then
    hs.message = hs.message .. "; " .. says(prometheus)
  end
end
return hs
