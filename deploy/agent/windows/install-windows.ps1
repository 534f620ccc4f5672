<#
.SYNOPSIS
    Installs, upgrades or removes the RMM endpoint agent as a Windows service.

.DESCRIPTION
    The agent is a console program; WinSW (the Windows Service Wrapper, a single executable
    downloaded from its release page, e.g. WinSW-x64.exe 2.12) turns it into a service.

    Lays out:
      %ProgramFiles%\rmm-agent\venv                   the agent and its dependencies
      %ProgramFiles%\rmm-agent\rmm-agent-service.exe  WinSW, renamed; rmm-agent-service.xml beside it
      %ProgramData%\rmm-agent\agent.toml              the config (holds the enrollment token)
      %ProgramData%\rmm-agent\state                   credential and spool
      %ProgramData%\rmm-agent\logs                    the agent's log, rolled by size
    %ProgramData%\rmm-agent is readable by SYSTEM and Administrators only.

    Running it again upgrades the agent in place (the service is stopped, updated, started again);
    the existing config is kept unless -CollectorUrl is given again. The enrollment token comes
    from a file (-TokenFile) or $env:RMM_ENROLLMENT_TOKEN, never from the command line.
    -CommandKey pins collector signing keys; -OperatorKey (repeatable) pins the operators' keys
    whose signatures an offboard needs, and -OffboardApprovals N how many (default 2).

.EXAMPLE
    powershell -ExecutionPolicy Bypass -File install-windows.ps1 -CollectorUrl https://noc.example.net:8443 -TokenFile token.txt -WinSW C:\Temp\WinSW-x64.exe -Components catalogue.toml

.EXAMPLE
    powershell -ExecutionPolicy Bypass -File install-windows.ps1 -Uninstall -Purge
#>
[CmdletBinding()]
param(
    [string]$CollectorUrl = '',
    [string]$TokenFile = '',
    [string]$Components = '',
    [ValidateSet('', 'pc', 'server')]
    [string]$Kind = '',
    [string]$CaFile = '',
    [string[]]$CommandKey = @(),
    [string[]]$OperatorKey = @(),
    [ValidateRange(0, 16)][int]$OffboardApprovals = -1,
    [string]$Package = '',
    [string]$Python = '',
    [string]$WinSW = '',
    [switch]$NoStart,
    [switch]$Uninstall,
    [switch]$Purge
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$ServiceName = 'rmm-agent'
$InstallDir = Join-Path $env:ProgramFiles 'rmm-agent'
$VenvPython = Join-Path $InstallDir 'venv\Scripts\python.exe'
$ServiceExe = Join-Path $InstallDir 'rmm-agent-service.exe'
$ServiceXml = Join-Path $InstallDir 'rmm-agent-service.xml'
$DataDir = Join-Path $env:ProgramData 'rmm-agent'
$Config = Join-Path $DataDir 'agent.toml'
$StateDir = Join-Path $DataDir 'state'
$Here = Split-Path -Parent $MyInvocation.MyCommand.Path

function Say([string]$Message) { Write-Host "==> $Message" }

# Runs a program; its output goes to the console, its exit code comes back. Windows PowerShell
# turns a native program's stderr into errors, so errors are not fatal while it runs.
function Invoke-Native {
    param([string]$File, [string[]]$Arguments = @(), [switch]$AllowFailure)
    $previous = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        & $File @Arguments | Out-Host
        $code = $LASTEXITCODE
    } finally {
        $ErrorActionPreference = $previous
    }
    if (-not $AllowFailure -and $code -ne 0) {
        throw "$File $($Arguments -join ' ') failed with exit code $code"
    }
    return $code
}

function ConvertTo-TomlString([string]$Value) {
    return '"' + $Value.Replace('\', '\\').Replace('"', '\"') + '"'
}

function Stop-AgentService {
    $service = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
    if ($null -ne $service -and $service.Status -ne 'Stopped') {
        Say 'stopping the service'
        Stop-Service -Name $ServiceName -Force
        $service.WaitForStatus('Stopped', (New-TimeSpan -Seconds 30))
    }
}

function Remove-AgentService {
    if ($null -eq (Get-Service -Name $ServiceName -ErrorAction SilentlyContinue)) { return }
    Stop-AgentService
    if (Test-Path -LiteralPath $ServiceExe) {
        Invoke-Native $ServiceExe @('uninstall') | Out-Null
    } else {
        Invoke-Native (Join-Path $env:SystemRoot 'System32\sc.exe') @('delete', $ServiceName) | Out-Null
    }
}

$principal = New-Object Security.Principal.WindowsPrincipal(
    [Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    throw 'run this from an elevated PowerShell (Run as administrator)'
}

if ($Uninstall) {
    Say 'removing the service'
    Remove-AgentService
    if (Test-Path -LiteralPath $InstallDir) { Remove-Item -LiteralPath $InstallDir -Recurse -Force }
    if ($Purge) {
        Say "removing $DataDir (config, credential, unsent spool, logs)"
        if (Test-Path -LiteralPath $DataDir) { Remove-Item -LiteralPath $DataDir -Recurse -Force }
    } else {
        Say "kept $DataDir (use -Purge to remove it)"
    }
    exit 0
}

if ($Components -and -not (Test-Path -LiteralPath $Components)) { throw "cannot read $Components" }
if ($CaFile -and -not (Test-Path -LiteralPath $CaFile)) { throw "cannot read $CaFile" }
if (-not (Test-Path -LiteralPath $ServiceExe)) {
    if (-not $WinSW -or -not (Test-Path -LiteralPath $WinSW)) {
        throw 'first install: give -WinSW with the path of the downloaded WinSW executable'
    }
}
if (-not $Package) {
    # Default: the source tree this script ships in (deploy\agent\windows -> the project root).
    $Package = (Resolve-Path (Join-Path $Here '..\..\..')).Path
    if (-not (Test-Path -LiteralPath (Join-Path $Package 'pyproject.toml'))) {
        throw "no -Package given and $Package is not the source tree"
    }
}

# The service runs as LocalSystem, so Python must be installed for all users, not in a profile.
if (-not $Python) {
    $launcher = Get-Command py.exe -ErrorAction SilentlyContinue
    if ($null -ne $launcher) {
        $Python = (& $launcher.Source -3 -c 'import sys; print(sys.executable)' | Select-Object -First 1)
    }
}
if (-not $Python -or -not (Test-Path -LiteralPath $Python)) {
    throw 'Python 3.11 or later was not found: install it for all users, or pass -Python C:\...\python.exe'
}
if ($Python -like "$env:SystemDrive\Users\*") {
    throw "$Python is a per-user installation; install Python for all users (Program Files)"
}
if ((Invoke-Native $Python @('-c', 'import sys; sys.exit(sys.version_info < (3, 11))') -AllowFailure) -ne 0) {
    throw "$Python is older than Python 3.11"
}

Stop-AgentService

Say "installing the agent into $InstallDir"
New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
if (-not (Test-Path -LiteralPath $VenvPython)) {
    Invoke-Native $Python @('-m', 'venv', (Join-Path $InstallDir 'venv')) | Out-Null
}
Invoke-Native $VenvPython @('-m', 'pip', 'install', '--quiet', '--disable-pip-version-check',
    '--no-input', '--upgrade', 'pip') | Out-Null
Invoke-Native $VenvPython @('-m', 'pip', 'install', '--quiet', '--disable-pip-version-check',
    '--no-input', '--upgrade', $Package) | Out-Null
if ($WinSW) { Copy-Item -LiteralPath $WinSW -Destination $ServiceExe -Force }
Copy-Item -LiteralPath (Join-Path $Here 'rmm-agent-service.xml') -Destination $ServiceXml -Force

# SYSTEM (S-1-5-18) and Administrators (S-1-5-32-544) only; inherited by everything inside.
New-Item -ItemType Directory -Force -Path $DataDir | Out-Null
Invoke-Native (Join-Path $env:SystemRoot 'System32\icacls.exe') @($DataDir, '/inheritance:r',
    '/grant:r', '*S-1-5-18:(OI)(CI)F', '*S-1-5-32-544:(OI)(CI)F', '/Q') | Out-Null

if ($CollectorUrl) {
    $token = $env:RMM_ENROLLMENT_TOKEN
    if ($TokenFile) { $token = (Get-Content -LiteralPath $TokenFile -TotalCount 1) }
    if (-not $token -or -not $token.Trim()) {
        throw 'no enrollment token: give -TokenFile (or set $env:RMM_ENROLLMENT_TOKEN)'
    }
    $lines = @(
        '# RMM agent configuration; see deploy/README.md.',
        "collector_url = $(ConvertTo-TomlString $CollectorUrl)",
        "enrollment_token = $(ConvertTo-TomlString $token.Trim())",
        "state_dir = $(ConvertTo-TomlString $StateDir)"
    )
    $keys = @($CommandKey | Where-Object { $_ } | ForEach-Object { ConvertTo-TomlString $_ })
    $lines += "command_keys = [$($keys -join ', ')]"
    $operators = @($OperatorKey | Where-Object { $_ } | ForEach-Object { ConvertTo-TomlString $_ })
    $lines += "operator_keys = [$($operators -join ', ')]"
    if ($OffboardApprovals -ge 0) {
        $lines += "offboard_approvals = $OffboardApprovals"
    }
    if ($CaFile) {
        $pinned = Join-Path $DataDir 'noc-ca.pem'
        Copy-Item -LiteralPath $CaFile -Destination $pinned -Force
        $lines += "ca_file = $(ConvertTo-TomlString $pinned)"
    }
    if ($Kind) { $lines += "kind = $(ConvertTo-TomlString $Kind)" }
    $text = ($lines -join "`r`n") + "`r`n"
    if ($Components) { $text += "`r`n" + [System.IO.File]::ReadAllText((Resolve-Path $Components)) }
    Say "writing $Config"
    [System.IO.File]::WriteAllText($Config, $text, (New-Object System.Text.UTF8Encoding($false)))
    Remove-Variable token
} elseif (-not (Test-Path -LiteralPath $Config)) {
    throw "no $Config yet: give -CollectorUrl and -TokenFile for a first install"
}

# Exit status 78 = configuration error (the message names the key); 3 = not enrolled yet.
$status = Invoke-Native $VenvPython @('-m', 'agent', 'status', '--config', $Config) -AllowFailure
switch ($status) {
    0 { Say 'already enrolled; keeping the existing credential' }
    3 {
        Say 'enrolling with the collector'
        Invoke-Native $VenvPython @('-m', 'agent', 'enroll', '--config', $Config) | Out-Null
    }
    78 { throw "$Config is not valid (see the message above)" }
    default { throw "rmm-agent status failed with exit code $status" }
}

# Reinstalling applies any change to rmm-agent-service.xml, whatever the WinSW version.
Remove-AgentService
Say 'installing the service'
Invoke-Native $ServiceExe @('install') | Out-Null
if ($NoStart) {
    Say 'installed; it starts at the next boot (or: Start-Service rmm-agent)'
} else {
    Invoke-Native $ServiceExe @('start') | Out-Null
    Say "started; the log is in $(Join-Path $DataDir 'logs')"
}
