{
  # deploy-flake lab fixture: NixOS-like system closures built from Nix
  # builtins only (no nixpkgs, no inputs, nothing downloaded).
  #
  # nixosConfigurations.<name>.config.system.build.toplevel is laid out like a
  # NixOS toplevel: bin/switch-to-configuration, activate, etc/systemd/system
  # (with multi-user.target.wants), kernel, initrd, system, nixos-version,
  # sw/bin, and optionally pre-activate-safety-checks.
  # Builders use /bin/sh and the build host's coreutils, so the building host
  # needs `sandbox = false` (Debian nix-bin's default); the tools' package (sw/bin) is
  # copied from the build host's Debian packages (dpkg -L), once, in the image's store.
  description = "deploy-flake lab fixture: NixOS-like system closures, builtins only";

  outputs = { self }:
    let
      fx = import ./lib.nix { system = "x86_64-linux"; };
      inherit (fx) mkSystem units;
      healthy = name: mkSystem { hostName = name; };
    in
    {
      nixosConfigurations = {
        # the generation every lab host boots into first
        base = mkSystem { hostName = "lab"; };

        # healthy hosts: one config per lab host name
        alpha = healthy "alpha";
        beta = healthy "beta";
        gamma = healthy "gamma";
        delta = healthy "delta";
        epsilon = healthy "epsilon";
        webserver = mkSystem { hostName = "webserver"; extraUnits = [ units.extra ]; };

        # a generic healthy config and its next version: the app changes
        # (restart), the oneshot disappears (stop), an extra unit appears (start)
        good = healthy "good";
        good-v2 = mkSystem {
          hostName = "good";
          version = "2";
          appVersion = "1.1";
          extraUnits = [ units.extra ];
          dropUnits = [ "fixture-oneshot.service" ];
        };
        no-precheck = mkSystem { hostName = "no-precheck"; precheck = null; };
        # kernel and initrd differ from every other config: a reboot is needed
        new-kernel = mkSystem { hostName = "new-kernel"; kernelVersion = "6.2.0"; };
        # a new kernel (a reboot is needed) that "panics" at boot: the generator never activates
        # it (on the VM a real kernel panic, panic=5 resets; in a container an immediate reboot)
        panic-at-boot = mkSystem { hostName = "panic-at-boot"; kernelVersion = "6.3.0"; panicAtBoot = true; };
        # boot.loader.systemd-boot.configurationLimit = 2: its boot loader installer keeps the
        # entries (and kernel copies) of the newest two generations only
        boot-limit-2 = mkSystem { hostName = "boot-limit-2"; bootEntryLimit = 2; };
        # no panic= on its kernel command line, no watchdog: a panic or hang at boot would
        # leave the host down (plan, status and a --reboot deploy say so)
        no-reset = mkSystem { hostName = "no-reset"; kernelParams = [ ]; };

        # NixOS's specialisations: `foo` adds a unit (and runs sshd, as the system does);
        # -v2 is the next version of both, and `bar` is only in -v2
        special = mkSystem {
          hostName = "special";
          specialisations.foo = { extraUnits = [ units.extra ]; };
        };
        special-v2 = mkSystem {
          hostName = "special";
          version = "2";
          appVersion = "1.1";
          specialisations.foo = { extraUnits = [ units.extra ]; };
          specialisations.bar = { };
        };
        # built for i686-linux: runs on an x86_64 host (Nix's extra platform there)
        i686-system = mkSystem { hostName = "i686-system"; systemType = "i686-linux"; };
        # a new init (systemd's interface version differs): `test` exits 100, it only takes
        # effect after a reboot into it
        new-init = mkSystem { hostName = "new-init"; initInterface = "3"; };

        # healthy, but its activation takes about 6 s (to interrupt it on purpose)
        slow-activation = mkSystem { hostName = "slow-activation"; activationExtra = "sleep 6"; };

        # healthy; `switch-to-configuration boot` takes about 6 s (to interrupt the commit)
        slow-boot = mkSystem { hostName = "slow-boot"; bootDelay = 6; };

        # switch-to-configuration-ng's unit keys: unit-keys, then unit-keys-v2, where
        # every unit changes (fixture-keep and fixture-gone go away)
        unit-keys = mkSystem {
          hostName = "unit-keys";
          extraUnits = with fx.keyed 1; [ stopStart noRestart restart reload triggers keep gone socket socketService ];
        };
        unit-keys-v2 = mkSystem {
          hostName = "unit-keys";
          version = "2";
          extraUnits = with fx.keyed 2; [ stopStart noRestart restart reload triggers socket socketService ];
        };
        # unit-keys-v2 whose activation takes ~10 s (to interrupt a switch half-way)
        unit-keys-v2-slow = mkSystem {
          hostName = "unit-keys";
          version = "2";
          activationExtra = "sleep 10";
          extraUnits = with fx.keyed 2; [ stopStart noRestart restart reload triggers socket socketService ];
        };

        # --- failure variants ----------------------------------------------
        # switch-to-configuration's pre-switch check fails: every verb exits 1
        # (unless NIXOS_NO_CHECK=1)
        pre-switch-fail = mkSystem { hostName = "pre-switch-fail"; preSwitchCheck = "fail"; };
        # sw/bin's tools record which system's tool ran (/run/fixture-tools/log), for the
        # check that the agent takes every tool, and its shell, from the previous system
        tool-shims-a = mkSystem { hostName = "tool-shims-a"; toolShims = true; };
        tool-shims-b = mkSystem { hostName = "tool-shims-b"; toolShims = true; };
        # the same, with dash as sh (and so /bin/sh once active): the agent, which re-runs itself
        # with the previous system's sh, runs under dash when this system was the previous one
        tool-shims-dash = mkSystem { hostName = "tool-shims-dash"; toolShims = true; binsh = "dash"; };
        # a service crashes right after starting and is restarted every 2 s, forever:
        # it never enters "failed"
        crash-loop = mkSystem { hostName = "crash-loop"; extraUnits = [ units.crashLoop ]; };
        # sudo asks the deploy user for a password (security.sudo.wheelNeedsPassword = true)
        break-sudo = mkSystem { hostName = "break-sudo"; wheelNeedsPassword = true; };
        # each takes away one thing a fresh login of the deployer needs, from the system's etc:
        # deploy's key (/etc/ssh/authorized_keys.d/deploy), deploy's wheel membership (its
        # sudo), root's login (PermitRootLogin no), sshd's port 22 (it listens on 2222)
        no-key = mkSystem { hostName = "no-key"; keyUsers = [ "root" "sudopw" ]; };
        no-wheel = mkSystem { hostName = "no-wheel"; wheel = [ ]; };
        no-root-login = mkSystem { hostName = "no-root-login"; sshdSettings.PermitRootLogin = "no"; };
        other-port = mkSystem { hostName = "other-port"; sshdSettings.Port = "2222"; };
        # a unit fails to start, and the system's sw/bin holds broken core tools: a
        # rollback that used the tools of the system it leaves would fail
        broken-tools = mkSystem {
          hostName = "broken-tools";
          extraUnits = [ units.failing ];
          swExtra = ''
            for t in systemctl timeout sleep cat readlink flock awk sort comm tr sed stat nix-env ln mv rm; do
              rm -f "$out/bin/$t"  # a link into the tools' package
              printf '#!/bin/sh\necho "broken-tools: $0 must not be used" >&2\nexit 97\n' > "$out/bin/$t"
              chmod 0555 "$out/bin/$t"
            done
          '';
        };
        # `switch-to-configuration test` exits 4: a unit fails to start
        fail-activation = mkSystem { hostName = "fail-activation"; extraUnits = [ units.failing ]; };
        # <toplevel>/activate fails: exit 2
        fail-activate-script = mkSystem {
          hostName = "fail-activate-script";
          activationExtra = "echo 'fixture: activation snippet failed' >&2; exit 1";
        };
        # activation never returns (a oneshot unit that sleeps forever)
        hang-activation = mkSystem { hostName = "hang-activation"; extraUnits = [ units.hanging ]; };
        # activation succeeds but a unit fails a few seconds later
        fail-after-activation = mkSystem { hostName = "fail-after-activation"; extraUnits = [ units.failsLater ]; };
        # activation stops sshd (Conflicts=sshd.service): new logins fail
        lockout = mkSystem { hostName = "lockout"; extraUnits = [ units.lockout ]; };
        # sshd by socket (services.openssh.startWhenNeeded), and the same with a changed
        # sshd@.service ExecStart: switching to -v2 restarts the running sshd@ instances,
        # the deployer's own connections among them (nixops#460)
        sshd-socket = mkSystem { hostName = "sshd-socket"; sshdSocket = 1; };
        sshd-socket-v2 = mkSystem {
          hostName = "sshd-socket";
          version = "2";
          sshdSocket = 2;
        };
        # sshd is not part of the configuration at all
        no-sshd = mkSystem { hostName = "no-sshd"; sshd = false; };
        # `switch-to-configuration boot` fails (the boot loader cannot be installed)
        fail-boot = mkSystem { hostName = "fail-boot"; failBoot = true; };
        # <toplevel>/pre-activate-safety-checks exits 1
        precheck-fail = mkSystem { hostName = "precheck-fail"; precheck = "fail"; };
        # the closure is for another platform
        wrong-system = mkSystem { hostName = "wrong-system"; systemType = "aarch64-linux"; };
        # a dependency's builder exits 1
        build-fail = mkSystem { hostName = "build-fail"; extraDeps = [ fx.failingDrv ]; };
        # evaluation throws
        eval-fail = { config.system.build.toplevel = throw "fixture: evaluation of eval-fail intentionally fails"; };
        # the build takes about 20 s and prints a line per second
        slow-build = mkSystem { hostName = "slow-build"; extraDeps = [ (fx.slowDrv 20) ]; };
      };

      # the lab hosts as an inventory (deploy-flake --on @web, --on '*')
      deployFlake.hosts = {
        alpha = { destination = "nixos://alpha/alpha"; tags = [ "web" "eu" ]; };
        beta = { destination = "nixos://beta/beta"; tags = [ "web" "us" ]; };
        gamma = { destination = "nixos://gamma/gamma"; tags = [ "db" "eu" ]; };
        delta = { destination = "nixos://delta/delta"; tags = [ "db" "us" ]; user = "deploy"; sudo = true; };
      };

      lib = { inherit (fx) mkSystem units; };
    };
}
