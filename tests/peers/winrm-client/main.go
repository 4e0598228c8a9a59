// winrm-client drives a WinRM endpoint with Packer's own WinRM client code
// (packer-plugin-sdk's communicator/winrm on masterzen/winrm and winrmcp),
// so the test bed can prove its WinRM stand-in against it and compare our
// communicator with it. Each step prints one JSON line.
//
//	winrm-client [flags] STEP...
//
// Steps:
//
//	start CMD                 run CMD, report its stdout, stderr and exit code
//	starts N CMD              run CMD N times, report the total time
//	upload LOCAL REMOTE       upload a file (Communicator.Upload)
//	uploaddir LOCAL REMOTE    upload a folder (Communicator.UploadDir)
//	download REMOTE LOCAL     download a file (Communicator.Download)
//	cancel CMD SECONDS        start CMD, then after SECONDS terminate it
//	                          (a WinRM Signal) and delete its shell
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	sdkwinrm "github.com/hashicorp/packer-plugin-sdk/sdk-internals/communicator/winrm"
	"github.com/masterzen/winrm"
)

// version is what -version prints; scripts/peers.sh rebuilds the program
// when it does not print the wanted one.
const version = "winrm-client 1.1"

type result struct {
	Step   string  `json:"step"`
	Exit   int     `json:"exit"`
	Stdout string  `json:"stdout,omitempty"`
	Stderr string  `json:"stderr,omitempty"`
	Secs   float64 `json:"secs"`
	Error  string  `json:"error,omitempty"`
}

func main() {
	host := flag.String("host", "127.0.0.1", "WinRM host")
	port := flag.Int("port", 5986, "WinRM port")
	user := flag.String("user", "vagrant", "user")
	password := flag.String("password", "", "password")
	https := flag.Bool("https", false, "connect with HTTPS")
	insecure := flag.Bool("insecure", false, "do not check the server's certificate")
	ntlm := flag.Bool("ntlm", false, "authenticate with NTLM, as Packer does with winrm_use_ntlm")
	timeout := flag.Duration("timeout", 30*time.Minute, "the operation timeout (winrm_timeout)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	config := &sdkwinrm.Config{
		Host: *host, Port: *port, Username: *user, Password: *password,
		Timeout: *timeout, Https: *https, Insecure: *insecure,
	}
	if *ntlm {
		config.TransportDecorator = ntlmTransport
	}
	comm, err := sdkwinrm.New(config)
	if err != nil {
		fail("connecting: %s", err)
	}
	out := json.NewEncoder(os.Stdout)
	args := flag.Args()
	for len(args) > 0 {
		step, n := args[0], map[string]int{
			"start": 2, "starts": 3, "upload": 3, "uploaddir": 3, "download": 3, "cancel": 3,
		}[args[0]]
		if n == 0 || len(args) < n {
			fail("unknown or incomplete step %q", args)
		}
		a := args[1:n]
		args = args[n:]
		r := result{Step: step}
		started := time.Now()
		switch step {
		case "start":
			r.Exit, r.Stdout, r.Stderr, err = run(comm, a[0])
		case "starts":
			count, _ := strconv.Atoi(a[0])
			for i := 0; i < count && err == nil; i++ {
				r.Exit, _, _, err = run(comm, a[1])
				if err == nil && r.Exit != 0 {
					err = fmt.Errorf("run %d exited %d", i, r.Exit)
				}
			}
		case "upload":
			err = upload(comm, a[0], a[1])
		case "uploaddir":
			err = comm.UploadDir(a[1], a[0], nil)
		case "download":
			err = download(comm, a[0], a[1])
		case "cancel":
			secs, _ := strconv.ParseFloat(a[1], 64)
			err = cancel(*host, *port, *https, *insecure, *ntlm, *user, *password, a[0], secs)
		}
		r.Secs = time.Since(started).Seconds()
		if err != nil {
			r.Error = err.Error()
		}
		if err := out.Encode(r); err != nil {
			fail("writing: %s", err)
		}
	}
}

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "winrm-client: "+format+"\n", a...)
	os.Exit(1)
}

// run runs one command as Packer's provisioners do (Communicator.Start).
func run(comm packersdk.Communicator, command string) (int, string, string, error) {
	var stdout, stderr bytes.Buffer
	rc := &packersdk.RemoteCmd{Command: command, Stdout: &stdout, Stderr: &stderr}
	if err := comm.Start(context.Background(), rc); err != nil {
		return 0, "", "", err
	}
	code := rc.Wait()
	return code, stdout.String(), stderr.String(), nil
}

func upload(comm packersdk.Communicator, local, remote string) error {
	f, err := os.Open(local)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return comm.Upload(remote, f, &fi)
}

func download(comm packersdk.Communicator, remote, local string) error {
	f, err := os.Create(local)
	if err != nil {
		return err
	}
	if err := comm.Download(remote, f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// cancel starts command in a shell of its own, lets it run for secs
// seconds, then terminates it and deletes the shell, as masterzen/winrm's
// Command.Close and Shell.Close do.
// ntlmTransport is what Packer's WinRM communicator plugs in for
// winrm_use_ntlm: go-ntlmssp's handshake, no message sealing.
func ntlmTransport() winrm.Transporter { return &winrm.ClientNTLM{} }

func cancel(host string, port int, https, insecure, ntlm bool, user, password, command string, secs float64) error {
	params := *winrm.DefaultParameters
	if ntlm {
		params.TransportDecorator = ntlmTransport
	}
	client, err := winrm.NewClientWithParameters(
		&winrm.Endpoint{Host: host, Port: port, HTTPS: https, Insecure: insecure},
		user, password, &params)
	if err != nil {
		return err
	}
	shell, err := client.CreateShell()
	if err != nil {
		return err
	}
	cmd, err := shell.Execute(command)
	if err != nil {
		return err
	}
	time.Sleep(time.Duration(secs * float64(time.Second)))
	if err := cmd.Close(); err != nil {
		return fmt.Errorf("terminating: %w", err)
	}
	return shell.Close()
}
