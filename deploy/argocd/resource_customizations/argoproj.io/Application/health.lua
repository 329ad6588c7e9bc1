-- Argo CD health of a child Application in an app of apps (deploy/argocd/root.yaml): its own health,
-- so that a sync wave waits for the Applications of the wave before it. Argo CD stopped assessing
-- Applications by default in 1.8; this is the check its documentation gives to restore it.
local hs = {}
hs.status = "Progressing"
hs.message = ""
if obj.status ~= nil and obj.status.health ~= nil then
  hs.status = obj.status.health.status
  if obj.status.health.message ~= nil then
    hs.message = obj.status.health.message
  end
end
return hs
