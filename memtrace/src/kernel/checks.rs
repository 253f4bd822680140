//! The typed checks a hook strategy can require of the running kernel. They look at what
//! the kernel offers (BTF tracepoint prototypes and functions, tracefs format files,
//! kallsyms, resolved struct layouts, enums), never at version numbers; the final word is
//! the load and attach attempt.

use super::{Kernel, btf::Kind, cgroup, kallsyms, layout::Resolved};

/// What a strategy needs. Evaluated in order; the first failure is the refusal reason.
#[derive(Clone, Debug)]
pub enum Check {
    /// The BTF tracepoint exists and its arguments start with these types.
    TpArgs(&'static str, &'static [&'static str]),
    /// Argument `index` of the BTF tracepoint has this type.
    TpArg(&'static str, usize, &'static str),
    /// The classic tracepoint "category:name" exists with these fields.
    Fields(&'static str, &'static [&'static str]),
    /// kprobes exist and the function is in kallsyms (not inlined away).
    Kprobe(&'static str),
    /// The function is in BTF, as fentry/fexit need (lockdown may still refuse the load).
    BtfFunc(&'static str),
    /// The function's parameter types are exactly these.
    ParamTypes(&'static str, &'static [&'static str]),
    /// The function's first parameters have these names and types.
    ParamsStart(&'static str, &'static [(&'static str, &'static str)]),
    /// The function returns this type.
    Returns(&'static str, &'static str),
    /// The struct members BPF reads resolved from BTF (the function names what is missing).
    Layout(fn(&Resolved) -> Result<(), String>),
    /// `enum name` has this enumerator.
    Enumerator(&'static str, &'static str),
    /// The memory cgroup controller is enabled (memcg tracepoints fire).
    MemcgEnabled,
}

impl Check {
    pub fn eval(&self, k: &Kernel) -> Result<(), String> {
        match self {
            Check::TpArgs(tp, types) => tp_args(k, tp, types),
            Check::TpArg(tp, index, ty) => tp_arg(k, tp, *index, ty),
            Check::Fields(tp, fields) => tracefs_fields(k, tp, fields),
            Check::Kprobe(func) => kprobe(k, func),
            Check::BtfFunc(func) => {
                if k.btf.has_func(func) {
                    Ok(())
                } else {
                    Err(format!("{func} is not a BTF function on this kernel"))
                }
            }
            Check::ParamTypes(func, want) => {
                let (params, _) = signature(k, func)?;
                let have: Vec<&str> = params.iter().map(|(_, t)| t.as_str()).collect();
                if have == *want {
                    Ok(())
                } else {
                    Err(format!("{func} takes ({}), not ({})", have.join(", "), want.join(", ")))
                }
            }
            Check::ParamsStart(func, want) => params_start(k, func, want),
            Check::Returns(func, ty) => match signature(k, func)? {
                (_, ret) if ret == *ty => Ok(()),
                (_, ret) => Err(format!("{func} returns `{ret}`, not `{ty}`")),
            },
            Check::Layout(f) => f(&k.layout),
            Check::Enumerator(name, e) => enum_value(k, name, e)
                .map(|_| ())
                .ok_or_else(|| format!("no {e} in enum {name}")),
            Check::MemcgEnabled => cgroup::memcg_enabled(&k.procfs),
        }
    }
}

/// The value of `enumerator` in `enum name`.
pub fn enum_value(k: &Kernel, name: &str, enumerator: &str) -> Option<i64> {
    super::layout::enum_value_in(&k.btf, name, enumerator)
}

/// Parameters (name, printable type) and return type of a BTF function.
pub fn signature(k: &Kernel, func: &str) -> Result<(Vec<(String, String)>, String), String> {
    let missing = || format!("{func} is not a BTF function on this kernel");
    let f = k.btf.find(func, Kind::Func).and_then(|id| k.btf.get(id)).ok_or_else(missing)?;
    let proto = k.btf.get(f.size_or_type).filter(|p| p.kind == Kind::FuncProto).ok_or_else(missing)?;
    let params = proto.params.iter().map(|(n, t)| (n.clone(), k.btf.type_name(*t))).collect();
    Ok((params, k.btf.type_name(proto.size_or_type)))
}

fn tp_args(k: &Kernel, tp: &str, types: &[&str]) -> Result<(), String> {
    let Some(args) = k.btf.tracepoint_args(tp) else {
        return Err(format!("no btf_trace_{tp} in BTF"));
    };
    for (i, want) in types.iter().enumerate() {
        match args.get(i) {
            Some((_, t)) if t == want => {}
            Some((_, t)) => return Err(format!("{tp} argument {i} is `{t}`, not `{want}`")),
            None => return Err(format!("{tp} has {} arguments, not {}", args.len(), types.len())),
        }
    }
    Ok(())
}

fn tp_arg(k: &Kernel, tp: &str, index: usize, ty: &str) -> Result<(), String> {
    let args = k.btf.tracepoint_args(tp).ok_or_else(|| format!("no btf_trace_{tp} in BTF"))?;
    match args.get(index) {
        Some((_, t)) if t == ty => Ok(()),
        Some((_, t)) => Err(format!("{tp} argument {index} is `{t}`, not `{ty}`")),
        None => Err(format!("{tp} has no argument {index}")),
    }
}

fn tracefs_fields(k: &Kernel, tp: &str, fields: &[&str]) -> Result<(), String> {
    let (category, name) = tp.split_once(':').ok_or_else(|| format!("bad tracepoint {tp}"))?;
    let Some(f) = k.format(category, name) else {
        return Err(format!("no tracepoint {tp} in tracefs"));
    };
    for field in fields {
        if f.field(field).is_none() {
            return Err(format!("{tp} has no field {field}"));
        }
    }
    Ok(())
}

fn kprobe(k: &Kernel, func: &str) -> Result<(), String> {
    if !k.kprobes {
        return Err("kernel has no kprobes (CONFIG_KPROBES off)".into());
    }
    if !kallsyms::has_function(func) {
        return Err(format!("{func} is not in /proc/kallsyms (inlined or renamed)"));
    }
    Ok(())
}

fn params_start(k: &Kernel, func: &str, want: &[(&str, &str)]) -> Result<(), String> {
    let (params, _) = signature(k, func)?;
    for (i, (name, ty)) in want.iter().enumerate() {
        match params.get(i) {
            Some((n, t)) if n == name && t == ty => {}
            Some((n, t)) => {
                return Err(format!("{func} argument {i} is `{t} {n}`, not `{ty} {name}`"));
            }
            None => return Err(format!("{func} has fewer than {} arguments", i + 1)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's kernel (6.18 on the project's host; any kernel with BTF and tracefs).
    #[test]
    fn checks_against_the_running_kernel() {
        let Some(k) = crate::kernel::tests::running_kernel() else { return };
        let ok = |c: Check| c.eval(&k).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        let refused = |c: Check| c.eval(&k).expect_err(&format!("{c:?} passed"));
        ok(Check::TpArgs("mark_victim", &["struct task_struct *"]));
        ok(Check::TpArg("kmem_cache_alloc", 2, "struct kmem_cache *"));
        assert!(refused(Check::TpArg("kmem_cache_alloc", 2, "int")).contains("argument 2"));
        assert!(refused(Check::TpArgs("no_such_tp", &[])).contains("no btf_trace_no_such_tp"));
        ok(Check::Fields("oom:mark_victim", &["pid"]));
        assert!(refused(Check::Fields("oom:mark_victim", &["nope"])).contains("no field nope"));
        assert!(refused(Check::Fields("oom:nope", &[])).contains("no tracepoint"));
        ok(Check::BtfFunc("out_of_memory"));
        ok(Check::ParamTypes("oom_badness", &["struct task_struct *", "long unsigned int"]));
        assert!(refused(Check::ParamTypes("oom_badness", &["int"])).contains("takes ("));
        ok(Check::ParamsStart("out_of_memory", &[("oc", "struct oom_control *")]));
        ok(Check::Returns("oom_badness", "long int"));
        ok(Check::Enumerator("node_stat_item", "NR_SHMEM"));
        assert!(refused(Check::Enumerator("node_stat_item", "NR_NOPE")).contains("NR_NOPE"));
        ok(Check::Layout(|l| if l.missing.is_empty() { Ok(()) } else { Err("x".into()) }));
        if !k.kprobes {
            assert!(refused(Check::Kprobe("out_of_memory")).contains("no kprobes"));
        }
    }
}
