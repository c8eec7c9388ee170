# Builtins-only building blocks for NixOS-like toplevels (see flake.nix).
{ system }:
let
  # The script ends with a builtin (`:`), so the shell stays the builder until it exits:
  # bash (the lab's /bin/sh, as NixOS's binsh) execs a script's last command in place of
  # itself, and a coreutils command (chmod, ...) closes its stderr just before it exits;
  # Nix takes the closed log pipe for the builder's end and SIGKILLs it, which under load
  # lands before the exit ("builder ... failed due to signal 9 (Killed)").
  runSh = name: env: script: derivation ({
    inherit name system;
    builder = "/bin/sh";
    args = [ "-eu" "-c" "${script}\n:" ];
    PATH = "/usr/bin:/bin";
  } // env);

  # The image's tools, as NixOS's packages (coreutils, util-linux, findutils, awk, grep,
  # sed, systemd, nix, bash, ...): copies of the binaries the image's Debian packages put in
  # /usr/bin and /usr/sbin, built once in the image's own store (its first generation
  # pulls them in), so a host never builds them again; `sh` is bash, as NixOS's binsh.
  # systemd's own binaries are a package of their own (`systemd`): a transient unit's
  # PATH is only its bin/, as NixOS's systemd is patched to have (DEFAULT_PATH_NORMAL).
  # No sudo: NixOS runs it from /run/wrappers/bin (setuid), which activate links.
  copyBins = name: pkgs: extra: runSh name { inherit pkgs extra; } ''
    mkdir -p "$out/bin"
    for p in $pkgs; do
      dpkg -L "$p" | grep -E '^(/usr)?/s?bin/[^/]+$' | while read -r f; do
        b=''${f##*/}
        [ -e "$out/bin/$b" ] || [ -L "$out/bin/$b" ] || cp -P "$f" "$out/bin/$b"
      done
    done
    eval "$extra"
  '';
  systemdPkg = copyBins "systemd-fixture" "systemd systemd-sysv" "";
  tools = copyBins "tools-fixture"
    "coreutils util-linux mount bsdutils findutils mawk grep sed bash dash diffutils gzip xz-utils procps iproute2 hostname kmod nix-bin login passwd tar zstd less ncurses-bin"
    ''
      for f in ${systemdPkg}/bin/*; do ln -sfn "$f" "$out/bin/''${f##*/}"; done
      ln -sfn mawk "$out/bin/awk"
      ln -sfn bash "$out/bin/sh"
      # Debian's alternatives (/etc/alternatives/...) are not part of a store path: resolve them
      for f in "$out"/bin/*; do
        case $(readlink "$f") in /etc/alternatives/*) cp -P "$(readlink -f "$f")" "$f.new" 2>/dev/null && mv -f "$f.new" "$f" || rm -f "$f" ;; esac
      done
    '';
  toolsPath = "${tools}/bin";

  # one systemd unit file in its own store path, like NixOS's unit-*.drv
  # (a store path name has no "@": a template sshd@.service is unit-sshd-.service, as in NixOS)
  # (wantedBy = null: wanted by nothing, like a socket-activated service). Every service
  # gets NixOS's default unit PATH (the packages, never /usr/bin).
  mkUnit = { name, text, version ? "1.0", wantedBy ? "multi-user.target" }:
    (runSh "unit-${builtins.replaceStrings [ "@" ] [ "-" ] name}-${version}" {
      unitName = name;
      unitText = builtins.replaceStrings [ "[Service]\n" ] [ "[Service]\nEnvironment=PATH=${toolsPath}\n" ] text;
    } ''
      mkdir -p "$out"
      printf '%s\n' "$unitText" > "$out/$unitName"
    '') // { unitName = name; inherit wantedBy; };

  mkApp = version: runSh "fixture-app-${version}" {
    appScript = builtins.readFile ./scripts/fixture-app.sh;
    inherit version;
  } ''
    mkdir -p "$out/bin"
    { printf '#!/bin/sh\nFIXTURE_APP_VERSION=%s\n' "$version"; printf '%s\n' "$appScript"; } > "$out/bin/fixture-app"
    chmod 0555 "$out/bin/fixture-app"
  '';

  units = {
    # sshd owned by the configuration, as on NixOS (services.openssh.enable): it reads
    # /etc/ssh/sshd_config (the system's etc) and is restarted, not stopped, when that
    # file changes (sshd.nix: restartTriggers, stopIfChanged = false)
    sshd = sshdConfig: mkUnit {
      name = "sshd.service";
      text = ''
        [Unit]
        Description=SSH Daemon
        After=network.target lab-hostkey.service
        X-Restart-Triggers=${sshdConfig}
        [Service]
        ExecStartPre=/usr/sbin/sshd -t -f /etc/ssh/sshd_config
        ExecStart=/usr/sbin/sshd -D -e -f /etc/ssh/sshd_config
        KillMode=process
        Restart=always
        RuntimeDirectory=sshd
        RuntimeDirectoryPreserve=yes
        X-StopIfChanged=false
        [Install]
        WantedBy=multi-user.target
      '';
    };
    app = app: mkUnit {
      name = "fixture-app.service";
      version = app.version or "1.0";
      text = ''
        [Unit]
        Description=fixture long-running app
        [Service]
        Type=simple
        ExecStart=${app}/bin/fixture-app serve
        X-StopIfChanged=false
        [Install]
        WantedBy=multi-user.target
      '';
    };
    oneshot = app: mkUnit {
      name = "fixture-oneshot.service";
      text = ''
        [Unit]
        Description=fixture oneshot that succeeds
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=${app}/bin/fixture-app ok
        [Install]
        WantedBy=multi-user.target
      '';
    };
    extra = mkUnit {
      name = "fixture-extra.service";
      text = ''
        [Unit]
        Description=fixture unit only some configurations have
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/bin/true
        [Install]
        WantedBy=multi-user.target
      '';
    };
    failing = mkUnit {
      name = "fixture-failing.service";
      text = ''
        [Unit]
        Description=fixture unit that fails to start
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/bin/sh -c 'echo "fixture-failing: giving up" >&2; exit 3'
        [Install]
        WantedBy=multi-user.target
      '';
    };
    failsLater = mkUnit {
      name = "fixture-fails-later.service";
      text = ''
        [Unit]
        Description=fixture unit that starts, then dies a second later
        [Service]
        Type=simple
        ExecStart=/bin/sh -c 'sleep 1; echo "fixture-fails-later: crashed" >&2; exit 1'
        [Install]
        WantedBy=multi-user.target
      '';
    };
    hanging = mkUnit {
      name = "fixture-hang.service";
      text = ''
        [Unit]
        Description=fixture unit whose start never completes
        [Service]
        Type=oneshot
        TimeoutStartSec=infinity
        ExecStart=/bin/sleep infinity
        [Install]
        WantedBy=multi-user.target
      '';
    };
    crashLoop = mkUnit {
      name = "fixture-crash-loop.service";
      text = ''
        [Unit]
        Description=fixture unit that crashes right after starting, and is restarted forever
        StartLimitIntervalSec=0
        [Service]
        Type=simple
        Restart=always
        RestartSec=2
        ExecStart=/bin/sh -c 'sleep 0.5; echo "fixture-crash-loop: crashed" >&2; exit 1'
        [Install]
        WantedBy=multi-user.target
      '';
    };
    lockout = mkUnit {
      name = "fixture-lockout.service";
      text = ''
        [Unit]
        Description=fixture unit that stops sshd when started (lockout)
        Conflicts=sshd.service ssh.service ssh.socket sshd.socket
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/bin/true
        [Install]
        WantedBy=multi-user.target
      '';
    };
    # services.openssh.startWhenNeeded: sshd.socket (Accept=yes) starts one sshd@.service
    # instance per connection (sshd -i on the socket); sshd.nix sets stopIfChanged = false,
    # so switch-to-configuration restarts the running instances when the template changes
    sshdSocket = mkUnit {
      name = "sshd.socket";
      wantedBy = "sockets.target";
      text = ''
        [Unit]
        Description=SSH Socket
        Conflicts=sshd.service
        [Socket]
        ListenStream=22
        Accept=yes
        [Install]
        WantedBy=sockets.target
      '';
    };
    # GEN changes the template's ExecStart (its log level): every running instance restarts
    sshdAt = gen: mkUnit {
      name = "sshd@.service";
      version = toString gen;
      wantedBy = null;
      text = ''
        [Unit]
        Description=SSH Daemon
        After=network.target lab-hostkey.service
        [Service]
        ExecStart=-/usr/sbin/sshd -i -e -f /etc/ssh/sshd_config -o LogLevel=${if gen == 1 then "INFO" else "VERBOSE"}
        KillMode=process
        StandardInput=socket
        StandardError=journal
        RuntimeDirectory=sshd
        RuntimeDirectoryPreserve=yes
        X-StopIfChanged=false
      '';
    };
  };

  # Units for switch-to-configuration-ng's unit keys, in generation GEN: every
  # one but fixture-triggers changes its [Service] from one GEN to the next.
  keyed = gen:
    let
      echoServer = builtins.toFile "fixture-echo.pl" ''
        use IO::Socket::INET;
        my $listener = IO::Socket::INET->new_from_fd(3, "r") or die "fixture-echo: no socket from systemd: $!";
        while (my $c = $listener->accept) { print $c "fixture-echo generation $ENV{FIXTURE_GEN}\n"; close $c; }
      '';
      svc = name: desc: unitExtra: serviceExtra: mkUnit {
        inherit name;
        version = toString gen;
        text = ''
          [Unit]
          Description=${desc}
          ${unitExtra}
          [Service]
          Type=simple
          Environment=FIXTURE_GEN=${toString gen}
          ExecStart=/bin/sleep infinity
          ${serviceExtra}
          [Install]
          WantedBy=multi-user.target
        '';
      };
    in
    {
      stopStart = svc "fixture-stop-start.service" "fixture unit with default keys: stopped, then started" "" "";
      noRestart = svc "fixture-no-restart.service" "fixture unit with X-RestartIfChanged=false" "" "X-RestartIfChanged=false";
      restart = svc "fixture-restart.service" "fixture unit with X-StopIfChanged=false" "" "X-StopIfChanged=false";
      reload = svc "fixture-reload.service" "fixture unit with X-ReloadIfChanged=true" ""
        "X-ReloadIfChanged=true\nExecReload=/bin/sh -c 'echo reloaded >> /run/fixture-reload.log'";
      keep = svc "fixture-keep.service" "fixture unit with X-StopOnRemoval=false" "X-StopOnRemoval=false" "";
      gone = svc "fixture-gone.service" "fixture unit that goes away (stopped on removal)" "" "";
      # only its X-Reload-Triggers change: reloaded
      triggers = mkUnit {
        name = "fixture-triggers.service";
        version = toString gen;
        text = ''
          [Unit]
          Description=fixture unit whose X-Reload-Triggers change
          X-Reload-Triggers=${toString gen}
          [Service]
          Type=simple
          ExecStart=/bin/sleep infinity
          ExecReload=/bin/sh -c 'echo reloaded >> /run/fixture-triggers.log'
          [Install]
          WantedBy=multi-user.target
        '';
      };
      # a socket-activated service (wanted by nothing) and its socket
      socket = mkUnit {
        name = "fixture-echo.socket";
        wantedBy = "sockets.target";
        text = ''
          [Unit]
          Description=fixture socket that activates fixture-echo.service
          [Socket]
          ListenStream=127.0.0.1:7070
          [Install]
          WantedBy=sockets.target
        '';
      };
      # answers every connection on the socket systemd passes it (fd 3), so none waits
      socketService = mkUnit {
        name = "fixture-echo.service";
        version = toString gen;
        wantedBy = null;
        text = ''
          [Unit]
          Description=fixture socket-activated service
          [Service]
          Type=simple
          Environment=FIXTURE_GEN=${toString gen}
          ExecStart=/usr/bin/perl ${echoServer}
        '';
      };
    };

  failingDrv = runSh "fixture-broken-dep-1.0" { } ''
    echo "fixture: this derivation intentionally fails to build" >&2
    exit 1
  '';

  slowDrv = secs: runSh "fixture-slow-dep-1.0" { inherit secs; } ''
    i=0
    while [ "$i" -lt "$secs" ]; do echo "fixture: slow build step $i/$secs"; sleep 1; i=$((i+1)); done
    mkdir -p "$out"; echo done > "$out/done"
  '';

  # A kernel and initrd that are not bootable, each padded to SIZE KiB so that the copies
  # the boot loader installer makes under /boot/EFI/nixos take room (a small /boot fills up).
  mkKernel = version: size: runSh "linux-${version}-fixture" { size = toString size; } ''
    mkdir -p "$out/lib/modules/${version}"
    { echo "fixture kernel ${version} (not bootable)"; head -c "$((size * 1024))" /dev/zero; } > "$out/bzImage"
    { echo "fixture initrd ${version} (not bootable)"; head -c "$((size * 1024))" /dev/zero; } > "$out/initrd"
  '';

  # The lab's client key (a snakeoil key, like nixpkgs' nixos/tests/ssh-keys.nix: the lab
  # is reached over loopback only); its private half is lab/image/lab-client-key.
  labKey = builtins.replaceStrings [ "\n" ] [ "" ] (builtins.readFile ./lab-client-key.pub);

  # /etc/sudoers as NixOS's security.sudo generates it (sudo.nix: no includedir, so no
  # sudoers.d; the wheel rule from wheelNeedsPassword, then security.sudo.extraRules)
  mkSudoers = { wheelNeedsPassword, extraRules }:
    builtins.toFile "sudoers" (''
      # Don't edit this file. Set the NixOS options 'security.sudo.configFile'
      # or 'security.sudo.extraRules' instead.

      # Keep SSH_AUTH_SOCK so that pam_ssh_agent_auth.so can do its magic.
      Defaults env_keep+=SSH_AUTH_SOCK

      # "root" is allowed to do anything.
      root        ALL=(ALL:ALL) SETENV: ALL

      # extraRules
      %wheel  ALL=(ALL:ALL) ${if wheelNeedsPassword then "" else "NOPASSWD:"}SETENV: ALL
    '' + builtins.concatStringsSep "" (map (r: "${r}\n") extraRules));

  # /etc/ssh/sshd_config as NixOS's services.openssh writes it (sshd.nix: settings, the
  # keys of /etc/ssh/authorized_keys.d/%u beside ~/.ssh/authorized_keys), plus the lab's
  mkSshdConfig = settings:
    let
      all = {
        Port = "22";
        PermitRootLogin = "prohibit-password";
        PasswordAuthentication = "no";
        KbdInteractiveAuthentication = "no";
        UseDNS = "no";
        MaxStartups = "100:30:200";
      } // settings;
    in
    builtins.toFile "sshd_config" (''
      UsePAM yes
      Banner none
      AddressFamily any
      X11Forwarding no
      PrintMotd no
      AuthorizedPrincipalsFile none
      HostKey /etc/ssh/ssh_host_ed25519_key
      AuthorizedKeysFile %h/.ssh/authorized_keys /etc/ssh/authorized_keys.d/%u
      Subsystem sftp /usr/lib/openssh/sftp-server
    '' + builtins.concatStringsSep "" (builtins.attrValues (builtins.mapAttrs (k: v: "${k} ${v}\n") all)));

  mkSystem =
    args@{ hostName
    , version ? "1"
    , appVersion ? "1.0"
    , sshd ? true                  # the configuration runs sshd
    , extraUnits ? [ ]
    , dropUnits ? [ ]              # unit names to leave out of the default set
    , precheck ? "ok"              # "ok" | "fail" | null (no check program)
    , activationExtra ? ""         # shell appended to <toplevel>/activate
    , extraDeps ? [ ]              # extra derivations pulled into the closure
    , kernelVersion ? "6.1.0"
    , kernelSize ? 1024            # KiB of the fixture kernel and of its initrd (each is copied to /boot)
    , kernelParams ? [ "panic=5" ] # boot.kernelParams: the boot entry's options, <toplevel>/kernel-params
    , bootEntryLimit ? null        # boot.loader.systemd-boot.configurationLimit (null: every generation)
    , panicAtBoot ? false          # the kernel "panics" at boot into this system (lab/README.md)
    , systemType ? system          # what <toplevel>/system says
    , failBoot ? false             # `switch-to-configuration boot` fails
    , bootDelay ? 0                # seconds `switch-to-configuration boot` takes
    , swExtra ? ""                 # shell appended to the build of sw/ ($out is sw)
    , toolShims ? false            # sw/bin's tools are shims that record who ran them
    , binsh ? "bash"               # what sw/bin/sh (and so /bin/sh once active) runs: bash or dash
    , preSwitchCheck ? "ok"        # "ok" | "fail": switch-to-configuration's pre-switch check
    , initInterface ? "2"          # what <toplevel>/init-interface-version says (after "systemd ")
    , specialisations ? { }        # NAME -> the arguments that differ from this system's
    , wheelNeedsPassword ? false   # security.sudo.wheelNeedsPassword
    , sudoRules ? [ "sudopw ALL=(ALL:ALL) SETENV: ALL" ]  # security.sudo.extraRules, as lines
    , wheel ? [ "deploy" ]         # the members of group wheel (users.users.NAME.extraGroups)
    , keyUsers ? [ "root" "deploy" "sudopw" ]  # users.users.NAME.openssh.authorizedKeys.keys: the lab's key
    , sshdSettings ? { }           # services.openssh.settings over the lab's (Port, PermitRootLogin, ...)
    , sshdSocket ? null            # services.openssh.startWhenNeeded: the sshd@ template's generation
    }:
    let
      app = mkApp appVersion;
      kernel = mkKernel kernelVersion kernelSize;
      sshdConfig = mkSshdConfig sshdSettings;
      sudoers = mkSudoers { inherit wheelNeedsPassword; extraRules = sudoRules; };
      # startWhenNeeded keeps sshd_config and swaps sshd.service for sshd.socket + sshd@
      sshdUnits =
        if !sshd then [ ]
        else if sshdSocket == null then [ (units.sshd sshdConfig) ]
        else [ units.sshdSocket (units.sshdAt sshdSocket) ];
      defaultUnits = sshdUnits ++ [ (units.app app) (units.oneshot app) ];
      keep = u: !(builtins.elem u.unitName dropUnits);
      allUnits = builtins.filter keep defaultUnits ++ extraUnits;
      nixosVersion = "fixture-${version} (${hostName})";
      # NixOS's specialisation.NAME (inheritParentConfig): a whole system of its own, linked
      # from <toplevel>/specialisation/NAME
      children = builtins.attrValues (builtins.mapAttrs
        (name: override: "${name}=${(mkSystem (builtins.removeAttrs args [ "specialisations" ] // override)).config.system.build.toplevel}")
        specialisations);

      etc = runSh "etc" {
        inherit hostName nixosVersion keyUsers labKey sudoers;
        sshdConfig = if sshd then sshdConfig else "";
        wheel = builtins.concatStringsSep "," wheel;
        setEnvironment = builtins.readFile ./scripts/set-environment.sh;
        unitPaths = map (u: "${u}/${u.unitName}") allUnits;
        wants = map (u: "${u.wantedBy}/${u.unitName}") (builtins.filter (u: u.wantedBy != null) allUnits);
      } ''
        d="$out/etc/systemd/system"
        mkdir -p "$d" "$out/etc/fixture-nixos"
        for u in $unitPaths; do ln -s "$u" "$d/$(basename "$u")"; done
        for w in $wants; do
          mkdir -p "$d/''${w%%/*}.wants"
          ln -s "../''${w#*/}" "$d/''${w%%/*}.wants/''${w#*/}"
        done
        echo "$hostName" > "$out/etc/hostname"
        echo "$nixosVersion" > "$out/etc/fixture-nixos/version"
        : > "$out/etc/NIXOS"
        # what security.sudo, services.openssh and users.users put in etc
        cp "$sudoers" "$out/etc/sudoers"
        mkdir -p "$out/etc/ssh/authorized_keys.d"
        if [ -n "$sshdConfig" ]; then ln -s "$sshdConfig" "$out/etc/ssh/sshd_config"; fi
        for u in $keyUsers; do printf '%s\n' "$labKey" > "$out/etc/ssh/authorized_keys.d/$u"; done
        # the fixture's stand-in for update-users-groups.pl's spec: group wheel's members
        printf '%s\n' "$wheel" > "$out/etc/fixture-nixos/wheel"
        printf '%s\n' "$setEnvironment" > "$out/etc/set-environment"
      '';

      # NixOS's system-path (a buildEnv): sw/bin is this system's own directory of links
      # into the packages; with toolShims, of shims that record which system's tool ran
      # (as "HOSTNAME TOOL CALLER'S-EXECUTABLE CALLER'S-COMMAND-LINE" lines in /run/fixture-tools/log)
      sw = runSh "system-path" {
        inherit nixosVersion swExtra hostName binsh;
        tools = toolsPath;
        shim = if toolShims then builtins.readFile ./scripts/tool-shim.sh else "";
        bootctl = builtins.readFile ./scripts/bootctl.sh;
      } ''
        # (one ln, one chmod: a process per tool, ~400 of them, cost every system's build
        # about half a second of CPU, and a test run builds hundreds of systems)
        mkdir -p "$out/bin"
        if [ -n "$shim" ]; then
          for f in "$tools"/*; do
            t=''${f##*/}
            { echo "#!$tools/bash"; echo "HOST=$hostName TOOL=$t REAL=$f"; printf '%s\n' "$shim"; } > "$out/bin/$t"
          done
          chmod 0555 "$out"/bin/*
        else
          ln -s "$tools"/* "$out/bin/"
        fi
        if [ "$binsh" != bash ]; then rm "$out/bin/sh"; ln -s "$tools/$binsh" "$out/bin/sh"; fi
        # the fixture's bootctl (scripts/bootctl.sh: the lab's systemd-boot model), not Debian's
        rm -f "$out/bin/bootctl"
        { echo "#!$tools/bash"; echo "toolsPath=$tools"; printf '%s\n' "$bootctl"; } > "$out/bin/bootctl"
        chmod 0555 "$out/bin/bootctl"
        printf '#!/bin/sh\necho "%s"\n' "$nixosVersion" > "$out/bin/nixos-version"
        chmod 0555 "$out/bin/nixos-version"
        eval "$swExtra"
      '';

      toplevel = runSh "nixos-system-${hostName}-${version}" {
        inherit hostName nixosVersion etc sw kernel precheck activationExtra systemType initInterface children toolsPath kernelVersion;
        kernelParams = builtins.concatStringsSep " " kernelParams;
        bootEntryLimit = if bootEntryLimit == null then "" else toString bootEntryLimit;
        panicAtBoot = if panicAtBoot then "1" else "";
        systemd = systemdPkg;
        precheckEnabled = if precheck == null then "" else "1";
        failBoot = if failBoot then "1" else "";
        preSwitchFail = if preSwitchCheck == "fail" then "1" else "";
        bootDelay = toString bootDelay;
        inherit extraDeps;
        stc = builtins.readFile ./scripts/switch-to-configuration.sh;
        activateScript = builtins.readFile ./scripts/activate.sh;
        precheckScript = builtins.readFile ./scripts/pre-activate-safety-checks.sh;
      } ''
        mkdir -p "$out/bin"
        ln -s "$etc/etc" "$out/etc"
        ln -s "$sw" "$out/sw"
        ln -s "$systemd" "$out/systemd"
        ln -s "$kernel/bzImage" "$out/kernel"
        ln -s "$kernel/initrd" "$out/initrd"
        ln -s "$kernel/lib/modules" "$out/kernel-modules"
        # as NixOS's top-level.nix: boot.kernelParams, without init= (the boot entry adds it)
        printf '%s' "$kernelParams" > "$out/kernel-params"
        # NixOS's bootspec (boot.json, org.nixos.bootspec.v1), one line, keys in this order
        printf '{"org.nixos.bootspec.v1":{"init":"%s","initrd":"%s","kernel":"%s","kernelParams":[%s],"label":"%s","system":"%s","toplevel":"%s"},"org.nixos.specialisation.v1":{}}\n' \
          "$out/init" "$kernel/initrd" "$kernel/bzImage" \
          "$(for p in $kernelParams; do printf '"%s",' "$p"; done | sed 's/,$//')" \
          "NixOS $nixosVersion (Linux $kernelVersion)" "$systemType" "$out" > "$out/boot.json"
        [ -z "$panicAtBoot" ] || echo "the kernel of this system panics at boot (lab fixture)" > "$out/fixture-panic-at-boot"
        printf '%s' "$nixosVersion" > "$out/nixos-version"
        printf '%s' "$systemType" > "$out/system"
        printf 'systemd %s' "$initInterface" > "$out/init-interface-version"
        if [ -n "$children" ]; then
          mkdir "$out/specialisation"
          for c in $children; do ln -s "''${c#*=}" "$out/specialisation/''${c%%=*}"; done
        fi
        for d in $extraDeps; do echo "$d"; done > "$out/extra-dependencies"

        { echo '#!/bin/sh'; echo "systemConfig=$out"; echo "PATH=$toolsPath"; printf '%s\n' "$activateScript"; printf '%s\n' "$activationExtra"; } > "$out/activate"
        { echo '#!/bin/bash'; echo "out=$out"; echo "toolsPath=$toolsPath"; echo "failBoot=$failBoot"; echo "bootDelay=$bootDelay"; echo "bootEntryLimit=$bootEntryLimit"; echo "preSwitchFail=$preSwitchFail"; printf '%s\n' "$stc"; } > "$out/bin/switch-to-configuration"
        { echo '#!/bin/sh'; echo "echo 'fixture init: stage 2 is emulated by the lab image' >&2; exit 1"; } > "$out/init"
        chmod 0555 "$out/activate" "$out/bin/switch-to-configuration" "$out/init"

        if [ -n "$precheckEnabled" ]; then
          { echo '#!/bin/sh'; echo "out=$out"; echo "mode=$precheck"; printf '%s\n' "$precheckScript"; } > "$out/pre-activate-safety-checks"
          chmod 0555 "$out/pre-activate-safety-checks"
        fi
      '';
    in
    {
      config = {
        networking.hostName = hostName;
        system.nixos.version = nixosVersion;
        system.build = { inherit toplevel etc; };
      };
    };
in
{
  inherit mkSystem mkUnit units keyed failingDrv slowDrv mkKernel runSh tools systemdPkg;
}
