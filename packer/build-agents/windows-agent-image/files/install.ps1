# Runs inside the Windows agent image while it is built (over WinRM).
$ErrorActionPreference = "Stop"
$ProgressPreference = "SilentlyContinue"

# cloudbase-init runs the VM seed's #ps1_sysnative user-data at first boot.
$cbi = "$env:TEMP\CloudbaseInitSetup.msi"
Invoke-WebRequest -Uri "https://cloudbase.it/downloads/CloudbaseInitSetup_Stable_x64.msi" -OutFile $cbi
Start-Process msiexec.exe -Wait -ArgumentList "/i `"$cbi`" /qn RUN_SERVICE_AS_LOCAL_SYSTEM=1"

# The Buildkite agent.
$agent = "C:\buildkite-agent"
New-Item -ItemType Directory -Force -Path $agent | Out-Null
Invoke-WebRequest -Uri "https://github.com/buildkite/agent/releases/latest/download/buildkite-agent-windows-amd64.zip" -OutFile "$env:TEMP\agent.zip"
Expand-Archive -Path "$env:TEMP\agent.zip" -DestinationPath $agent -Force

# At start-up: wait for the seed's env file, run the one job, power off.
$run = @'
$env_file = "C:\ProgramData\buildkite-agent\env.ps1"
while (-not (Test-Path $env_file)) { Start-Sleep -Seconds 2 }
. $env_file
& C:\buildkite-agent\buildkite-agent.exe start --disconnect-after-job --build-path C:\b
Stop-Computer -Force
'@
Set-Content -Path "$agent\run-job.ps1" -Value $run -Encoding UTF8
$action = New-ScheduledTaskAction -Execute "powershell.exe" -Argument "-NoProfile -ExecutionPolicy Bypass -File $agent\run-job.ps1"
$trigger = New-ScheduledTaskTrigger -AtStartup
Register-ScheduledTask -TaskName "buildkite-agent-job" -Action $action -Trigger $trigger -User "SYSTEM" -RunLevel Highest -Force | Out-Null
