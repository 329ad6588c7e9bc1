-- Argo CD health of a plantwatch.io DetectorModel (its conditions: crds/detectormodels.plantwatch.io.yaml).
-- ModelValid (the operator's while the source is missing or wrong, the inference service's once it
-- loads the model): False is Degraded, the previous model keeps serving but not the one in Git.
-- Scoring False (SensorsNotFound: no selected node has the sensors) is Degraded: it scores nothing.
-- Drifted True (ScoreDrifted, InputsDrifted) is Degraded: the model no longer sees what it was trained
-- on and its alarms are not to be trusted until it is retrained; Unknown (NotEnoughRows) is no verdict.
-- Available False with ReplicasNotReady is Progressing: the inference pods are starting.
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
local conditions = obj.status.conditions
local valid = find(conditions, "ModelValid")
local scoring = find(conditions, "Scoring")
local available = find(conditions, "Available")
local drifted = find(conditions, "Drifted")
local degraded = {}
for _, c in ipairs({{valid, "False"}, {scoring, "False"}, {drifted, "True"}}) do
  if c[1] ~= nil and c[1].status == c[2] then
    table.insert(degraded, says(c[1]))
  end
end
if #degraded > 0 then
  hs.status = "Degraded"
  hs.message = table.concat(degraded, "; ")
elseif valid == nil or scoring == nil or available == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the ModelValid, Scoring and Available conditions"
elseif available.status ~= "True" then
  hs.status = "Progressing"
  hs.message = says(available)
elseif valid.status ~= "True" or scoring.status ~= "True" then
  hs.status = "Progressing"
  hs.message = says(valid.status ~= "True" and valid or scoring)
else
  hs.status = "Healthy"
  hs.message = "Available: " .. tostring(available.message) .. "; Scoring: " .. tostring(scoring.message)
end
return hs
